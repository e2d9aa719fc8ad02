// The systemd unit that runs llm-server as a hardened service.
import { formatExecLine } from "./exec_line.ts";
import type { BuildKind } from "../build_info.ts";

export interface UnitOptions {
  /** Unit name without ".service". */
  name: string;
  /** Absolute path of the llm-server executable. */
  executable: string;
  /** The server's arguments, exactly as the program must receive them. */
  serverArgs: string[];
  /** The account the service runs as; created on the fly by systemd when no such user exists. */
  user: string;
  /** Absolute path of the environment file holding secrets such as LLM_SERVER_API_KEY. */
  envFile: string;
  /** When true, a missing environment file is not an error (the default file is optional). */
  envFileOptional: boolean;
  /** Absolute path of the model folder, mounted read-only for the service. */
  modelPath: string;
  /** The server's --shutdown-timeout in seconds; systemd waits longer before killing it. */
  shutdownTimeoutSeconds: number;
  build: BuildKind;
}

/** Grace beyond the server's own drain deadline before systemd sends SIGKILL. */
export const STOP_TIMEOUT_MARGIN_SECONDS = 15;

// Folders ProtectHome= hides; a model there is bind-mounted back read-only.
const HOME_FOLDERS = ["/home", "/root", "/run/user"];

export function isUnderHome(path: string): boolean {
  return HOME_FOLDERS.some((home) => path === home || path.startsWith(`${home}/`));
}

export function renderUnit(options: UnitOptions): string {
  const modelInHome = isUnderHome(options.modelPath);
  const stopTimeout = Math.ceil(options.shutdownTimeoutSeconds) + STOP_TIMEOUT_MARGIN_SECONDS;
  const lines = [
    "# Written by `llm-server install-service`; remove with `llm-server uninstall-service`.",
    "[Unit]",
    "Description=llm-server: OpenAI-compatible LLM inference server",
    "Documentation=https://github.com/sgl-project/sglang",
    "Wants=network-online.target",
    "After=network-online.target",
    "",
    "[Service]",
    "Type=exec",
    `ExecStart=${formatExecLine([options.executable, ...options.serverArgs])}`,
    "Restart=on-failure",
    "RestartSec=5s",
    // The server drains in-flight requests on SIGTERM for up to --shutdown-timeout.
    "KillSignal=SIGTERM",
    `TimeoutStopSec=${stopTimeout}s`,
    `EnvironmentFile=${options.envFileOptional ? "-" : ""}${unitPathValue(options.envFile)}`,
    // The executable unpacks its runtime once into the cache folder, which persists across restarts.
    "CacheDirectory=llm-server",
    "Environment=XDG_CACHE_HOME=%C/llm-server",
    "WorkingDirectory=%C/llm-server",
    `User=${options.user}`,
    "DynamicUser=yes",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    modelInHome ? "ProtectHome=tmpfs" : "ProtectHome=yes",
    "PrivateTmp=yes",
    `ReadOnlyPaths=${pathListItem(options.modelPath)}`,
    ...(modelInHome ? [`BindReadOnlyPaths=${pathListItem(options.modelPath).replaceAll(":", "\\:")}`] : []),
    ...(options.build === "CPU" ? ["PrivateDevices=yes"] : []),
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    // No MemoryDenyWriteExecute=: V8's JIT needs writable executable memory.
    "UMask=0077",
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ];
  return lines.join("\n");
}

// Path-list settings (ReadOnlyPaths=, BindReadOnlyPaths=) split on spaces unless quoted; inside quotes a
// backslash takes the next character literally (and BindReadOnlyPaths= needs ":" escaped the same way).
function pathListItem(path: string): string {
  const value = unitPathValue(path);
  return `"${value.replaceAll("\\", "\\\\").replaceAll('"', '\\"')}"`;
}

// Single-path settings take no quotes; spaces are fine, but `%` is a specifier and control characters cannot be written.
function unitPathValue(path: string): string {
  if (!path.startsWith("/")) throw new Error(`path must be absolute: ${path}`);
  if ([...path].some((ch) => ch.charCodeAt(0) < 0x20 || ch === "\x7f")) {
    throw new Error(`path contains a control character: ${JSON.stringify(path)}`);
  }
  if (/^\s|\s$/.test(path)) throw new Error(`path starts or ends with whitespace: ${JSON.stringify(path)}`);
  return path.replaceAll("%", "%%");
}
