// Command-line options of install-service / uninstall-service, and what they need from the server's own arguments.
import { resolve } from "node:path";

export const DEFAULT_UNIT_NAME = "llm-server";
export const DEFAULT_USER = "llm-server";
export const DEFAULT_UNIT_DIR = "/etc/systemd/system";
export const DEFAULT_SHUTDOWN_TIMEOUT_SECONDS = 30;

export interface InstallOptions {
  name: string;
  user: string;
  envFile: string | null;
  unitDir: string;
  executable: string | null;
  enable: boolean;
  dryRun: boolean;
  serverArgs: string[];
}

export interface UninstallOptions {
  name: string;
  unitDir: string;
  dryRun: boolean;
}

export class UsageError extends Error {}

export function parseInstallOptions(argv: string[]): InstallOptions {
  const separator = argv.indexOf("--");
  if (separator < 0) {
    throw new UsageError(
      "install-service needs the server's arguments after `--`, e.g. -- --model-path /srv/model",
    );
  }
  const options: InstallOptions = {
    name: DEFAULT_UNIT_NAME,
    user: DEFAULT_USER,
    envFile: null,
    unitDir: DEFAULT_UNIT_DIR,
    executable: null,
    enable: true,
    dryRun: false,
    serverArgs: argv.slice(separator + 1),
  };
  const own = new OptionReader("install-service", argv.slice(0, separator));
  for (let flag = own.next(); flag !== null; flag = own.next()) {
    if (flag === "--user") options.user = checkUserName(own.value(flag));
    else if (flag === "--env-file") options.envFile = resolve(own.value(flag));
    else if (flag === "--name") options.name = checkUnitName(own.value(flag));
    else if (flag === "--unit-dir") options.unitDir = resolve(own.value(flag));
    else if (flag === "--exec") options.executable = resolve(own.value(flag));
    else if (flag === "--no-enable") options.enable = false;
    else if (flag === "--dry-run") options.dryRun = true;
    else throw new UsageError(`install-service: unknown option ${flag}`);
  }
  return options;
}

export function parseUninstallOptions(argv: string[]): UninstallOptions {
  const options: UninstallOptions = { name: DEFAULT_UNIT_NAME, unitDir: DEFAULT_UNIT_DIR, dryRun: false };
  const own = new OptionReader("uninstall-service", argv);
  for (let flag = own.next(); flag !== null; flag = own.next()) {
    if (flag === "--name") options.name = checkUnitName(own.value(flag));
    else if (flag === "--unit-dir") options.unitDir = resolve(own.value(flag));
    else if (flag === "--dry-run") options.dryRun = true;
    else throw new UsageError(`uninstall-service: unknown option ${flag}`);
  }
  return options;
}

/** The server arguments with --model-path (and --chat-template) made absolute, and what the unit needs from them. */
export function serviceViewOfServerArgs(serverArgs: string[]): {
  serverArgs: string[];
  modelPath: string;
  shutdownTimeoutSeconds: number;
} {
  const args = [...serverArgs];
  let modelPath: string | null = null;
  let shutdownTimeoutSeconds = DEFAULT_SHUTDOWN_TIMEOUT_SECONDS;
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = splitFlag(args[i]);
    if (flag !== "--model-path" && flag !== "--chat-template" && flag !== "--shutdown-timeout") continue;
    const valueIndex = inline === null ? i + 1 : i;
    const value = inline ?? args[i + 1];
    if (value === undefined || value === "") throw new UsageError(`${flag} needs a value`);
    if (flag === "--shutdown-timeout") {
      shutdownTimeoutSeconds = Number(value);
      if (!Number.isFinite(shutdownTimeoutSeconds) || shutdownTimeoutSeconds < 0) {
        throw new UsageError(`--shutdown-timeout must be a number of seconds >= 0, not ${value}`);
      }
    } else {
      // The service runs in another working directory: a relative path would point elsewhere.
      const absolute = resolve(value);
      if (flag === "--model-path") modelPath = absolute;
      args[valueIndex] = inline === null ? absolute : `${flag}=${absolute}`;
    }
    if (inline === null) i++;
  }
  if (modelPath === null) throw new UsageError("the server arguments need --model-path DIR");
  return { serverArgs: args, modelPath, shutdownTimeoutSeconds };
}

function splitFlag(arg: string): [string, string | null] {
  const eq = arg.indexOf("=");
  return arg.startsWith("--") && eq > 0 ? [arg.slice(0, eq), arg.slice(eq + 1)] : [arg, null];
}

class OptionReader {
  #index = 0;
  constructor(private command: string, private args: string[]) {}

  next(): string | null {
    if (this.#index >= this.args.length) return null;
    const arg = this.args[this.#index++];
    const [flag, inline] = splitFlag(arg);
    if (inline !== null) this.args.splice(this.#index, 0, inline);
    return flag;
  }

  value(flag: string): string {
    const value = this.args[this.#index++];
    if (value === undefined || value === "") throw new UsageError(`${this.command}: ${flag} needs a value`);
    return value;
  }
}

function checkUserName(name: string): string {
  // The portable POSIX user name rule systemd's User= accepts for dynamic users.
  if (!/^[a-z_][a-z0-9_-]{0,30}$/.test(name)) {
    throw new UsageError(`--user: "${name}" is not a valid user name (lowercase letters, digits, _ and -)`);
  }
  return name;
}

function checkUnitName(name: string): string {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(name) || name.startsWith(".")) {
    throw new UsageError(`--name: "${name}" is not a valid unit name (letters, digits, _ . -)`);
  }
  return name;
}
