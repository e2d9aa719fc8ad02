/** Log lines in SGLang's format: `[2025-02-19 22:18:05] message`. */
export function timestamp(d = new Date()): string {
  const p = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${
    p(d.getMinutes())
  }:${p(d.getSeconds())}`;
}

const LEVELS = { debug: 0, info: 1, warning: 2, error: 3 } as const;
export type LogLevel = keyof typeof LEVELS;

let threshold: number = LEVELS.info;

export function setLogLevel(level: LogLevel): void {
  threshold = LEVELS[level];
}

export function log(message: string, level: LogLevel = "info"): void {
  if (LEVELS[level] < threshold) return;
  const line = `[${timestamp()}] ${message}`;
  if (level === "error" || level === "warning") console.error(line);
  else console.log(line);
}
