// systemd command lines (ExecStart=): writing argv so that every argument reaches the program unchanged,
// and reading one back the way systemd does (systemd.service(5), "Command lines"; systemd.unit(5), "Specifiers").
//
// systemd splits the value into words (whitespace outside quotes; "..." and '...' group; C escapes are
// decoded inside and outside quotes), then expands %-specifiers in each word, and at exec time expands
// $NAME and ${NAME}. So each argument is written double-quoted with `\`, `"` and control characters
// C-escaped, `%` doubled and `$` doubled. A quoted ";" is an ordinary argument, not a command separator.

const C_ESCAPES: Record<string, string> = {
  "\\": "\\\\",
  '"': '\\"',
  "\n": "\\n",
  "\t": "\\t",
  "\r": "\\r",
  "\x07": "\\a",
  "\b": "\\b",
  "\f": "\\f",
  "\v": "\\v",
};

/** One argument as a systemd command-line word. */
export function quoteExecArgument(argument: string): string {
  if (argument.includes("\0")) throw new Error("a command-line argument cannot contain a NUL character");
  let quoted = "";
  for (const ch of argument) {
    const code = ch.codePointAt(0)!;
    if (ch in C_ESCAPES) quoted += C_ESCAPES[ch];
    else if (ch === "%") quoted += "%%";
    else if (ch === "$") quoted += "$$";
    else if (code < 0x20 || code === 0x7f) quoted += `\\x${code.toString(16).padStart(2, "0")}`;
    else quoted += ch;
  }
  return `"${quoted}"`;
}

/** The value of ExecStart= for this argv (argv[0]: the absolute path of the program). */
export function formatExecLine(argv: string[]): string {
  if (argv.length === 0) throw new Error("a command line needs a program");
  if (!argv[0].startsWith("/")) throw new Error(`the program path must be absolute: ${argv[0]}`);
  return argv.map(quoteExecArgument).join(" ");
}

/**
 * The argv systemd runs for an ExecStart= value, for lines that use no specifiers other than %% and no
 * environment variables other than $$ (what formatExecLine writes). Anything else is an error: this
 * reader checks quoting, it does not resolve a unit's context.
 */
export function parseExecLine(line: string): string[] {
  const words: string[] = [];
  let i = 0;
  const isSpace = (c: string | undefined) => c === " " || c === "\t" || c === "\n" || c === "\r";
  while (true) {
    while (isSpace(line[i])) i++;
    if (i >= line.length) break;
    if (line[i] === ";" && (i + 1 === line.length || isSpace(line[i + 1]))) {
      throw new Error(`unquoted ";" at ${i} separates commands`);
    }
    // systemd checks for a lone \; before unescaping: it is a literal ";" argument.
    if (line.startsWith("\\;", i) && (i + 2 === line.length || isSpace(line[i + 2]))) {
      words.push(";");
      i += 2;
      continue;
    }
    let word = "";
    let quote: string | null = null;
    for (; i < line.length; i++) {
      const c = line[i];
      if (quote === null && isSpace(c)) break;
      if (c === "\\") {
        const [decoded, length] = decodeEscape(line, i);
        word += decoded;
        i += length - 1;
      } else if (quote !== null && c === quote) {
        quote = null;
      } else if (quote === null && (c === '"' || c === "'")) {
        quote = c;
      } else {
        word += c;
      }
    }
    if (quote !== null) throw new Error(`unterminated ${quote} quote`);
    words.push(expandDollars(expandSpecifiers(word)));
  }
  return words;
}

const SIMPLE_ESCAPES: Record<string, string> = {
  a: "\x07",
  b: "\b",
  f: "\f",
  n: "\n",
  r: "\r",
  t: "\t",
  v: "\v",
  s: " ",
  "\\": "\\",
  '"': '"',
  "'": "'",
};

// Returns the decoded text and the length of the escape sequence starting at `at` (the backslash).
function decodeEscape(line: string, at: number): [string, number] {
  const next = line[at + 1];
  if (next === undefined) throw new Error("a backslash ends the line");
  if (next in SIMPLE_ESCAPES) return [SIMPLE_ESCAPES[next], 2];
  const hexLength = next === "x" ? 2 : next === "u" ? 4 : next === "U" ? 8 : 0;
  if (hexLength > 0) {
    const digits = line.slice(at + 2, at + 2 + hexLength);
    if (!/^[0-9a-fA-F]+$/.test(digits) || digits.length !== hexLength) throw new Error(`bad escape at ${at}`);
    const code = parseInt(digits, 16);
    if (code === 0) throw new Error(`escaped NUL at ${at}`);
    return [String.fromCodePoint(code), 2 + hexLength];
  }
  const octal = line.slice(at + 1, at + 4);
  if (/^[0-7]{3}$/.test(octal) && parseInt(octal, 8) !== 0) {
    return [String.fromCharCode(parseInt(octal, 8)), 4];
  }
  throw new Error(`unknown escape \\${next} at ${at}`);
}

function expandSpecifiers(word: string): string {
  return word.replace(/%(.?)/gs, (_, c: string) => {
    if (c === "%") return "%";
    throw new Error(`specifier %${c} in "${word}" depends on the unit`);
  });
}

function expandDollars(word: string): string {
  return word.replace(/\$(.?)/gs, (_, c: string) => {
    if (c === "$") return "$";
    throw new Error(`environment variable reference in "${word}"`);
  });
}
