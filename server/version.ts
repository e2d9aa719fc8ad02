/** The release version of llm-server; the compiled executable's cache folder is keyed on it. */
export const VERSION = "0.1.0";
