// Tiny `--key value` / `--flag` parser: jsr (std/cli) is unreachable from the build machines, npm only.

export type ParsedArgs = Record<string, string | boolean>;

export function parseFlags(argv: string[], booleanFlags: string[] = []): ParsedArgs {
  const parsed: ParsedArgs = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith("--")) throw new Error(`unexpected argument ${arg}`);
    const eq = arg.indexOf("=");
    if (eq > 0) {
      parsed[arg.slice(2, eq)] = arg.slice(eq + 1);
      continue;
    }
    const key = arg.slice(2);
    if (booleanFlags.includes(key) || i + 1 >= argv.length || argv[i + 1].startsWith("--")) {
      parsed[key] = true;
    } else {
      parsed[key] = argv[++i];
    }
  }
  return parsed;
}
