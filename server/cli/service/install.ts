// `llm-server install-service` / `uninstall-service`: write or remove the systemd unit and tell systemd.
import { dirname } from "node:path";
import { buildKind } from "../build_info.ts";
import {
  parseInstallOptions,
  parseUninstallOptions,
  serviceViewOfServerArgs,
  UsageError,
} from "./options.ts";
import { isUnderHome, renderUnit } from "./unit.ts";

const ENV_FILE_TEMPLATE =
  `# Environment of the llm-server service (read by systemd as root; keep this file mode 600).
# LLM_SERVER_API_KEY=change-me
`;

export async function installService(argv: string[]): Promise<number> {
  try {
    const options = parseInstallOptions(argv);
    const view = serviceViewOfServerArgs(options.serverArgs);
    const executable = options.executable ?? runningExecutable();
    await requireExecutable(executable);
    await requireDirectory(view.modelPath, "--model-path");
    const envFile = options.envFile ?? `/etc/llm-server/${options.name}.env`;
    const unit = renderUnit({
      name: options.name,
      executable,
      serverArgs: view.serverArgs,
      user: options.user,
      envFile,
      envFileOptional: options.envFile === null,
      modelPath: view.modelPath,
      shutdownTimeoutSeconds: view.shutdownTimeoutSeconds,
      build: buildKind(),
    });
    if (view.serverArgs.some((arg) => arg === "--api-key" || arg.startsWith("--api-key="))) {
      console.error(
        `warning: --api-key ends up in the world-readable unit file; put LLM_SERVER_API_KEY in ${envFile} instead`,
      );
    }
    if (options.dryRun) {
      console.log(unit);
      return 0;
    }
    if (isUnderHome(executable)) {
      console.error(
        `warning: ${executable} is under a home folder, which the service cannot see (ProtectHome=);` +
          ` copy it to /usr/local/bin and pass --exec /usr/local/bin/llm-server`,
      );
    }
    if (options.envFile !== null) {
      await requireFile(options.envFile, "--env-file");
    } else {
      await createEnvFileIfMissing(envFile);
    }
    const unitPath = `${options.unitDir}/${options.name}.service`;
    await writeFileAtomically(unitPath, unit, 0o644);
    console.log(`Wrote ${unitPath}`);
    await systemctl("daemon-reload");
    if (options.enable) await systemctl("enable", `${options.name}.service`);
    const self = executable;
    console.log(
      `${options.enable ? "Enabled" : "Installed (not enabled)"}: ${options.name}.service
  start:        sudo systemctl start ${options.name}
  status:       systemctl status ${options.name}
  follow logs:  journalctl -u ${options.name} -f
  secrets:      put LLM_SERVER_API_KEY=... in ${envFile} (mode 600), then sudo systemctl restart ${options.name}
  remove:       sudo ${self} uninstall-service${
        options.name === "llm-server" ? "" : ` --name ${options.name}`
      }` +
        `${options.unitDir === "/etc/systemd/system" ? "" : ` --unit-dir ${options.unitDir}`}`,
    );
    return 0;
  } catch (e) {
    return reportFailure("install-service", e);
  }
}

export async function uninstallService(argv: string[]): Promise<number> {
  try {
    const options = parseUninstallOptions(argv);
    const unitName = `${options.name}.service`;
    const unitPath = `${options.unitDir}/${unitName}`;
    let unit: string;
    try {
      unit = await Deno.readTextFile(unitPath);
    } catch {
      throw new Error(`${unitPath} does not exist: ${unitName} is not installed there`);
    }
    const envFile = unit.match(/^EnvironmentFile=-?(.*)$/m)?.[1];
    if (options.dryRun) {
      console.log(
        `Would run: systemctl disable --now ${unitName}; remove ${unitPath}; systemctl daemon-reload`,
      );
      return 0;
    }
    try {
      await systemctl("disable", "--now", unitName);
    } catch (e) {
      console.error(`warning: ${e instanceof Error ? e.message : e} (removing the unit anyway)`);
    }
    await Deno.remove(unitPath);
    console.log(`Removed ${unitPath}`);
    await systemctl("daemon-reload");
    console.log(
      `Uninstalled ${unitName}.` +
        (envFile ? ` Kept ${envFile} (it may hold secrets: delete it yourself if unwanted).` : "") +
        ` The unpacked runtime in /var/cache/private/llm-server can be deleted.`,
    );
    return 0;
  } catch (e) {
    return reportFailure("uninstall-service", e);
  }
}

/** The file the unit should start: the self-extracting file, the compiled binary, or the dev launcher script. */
function runningExecutable(): string {
  const fromLauncher = Deno.env.get("LLM_SERVER_EXE");
  if (fromLauncher) return fromLauncher;
  if (Deno.build.standalone) return Deno.execPath();
  return new URL("../../../scripts/llm-server", import.meta.url).pathname;
}

async function systemctl(...args: string[]): Promise<void> {
  // LLM_SERVER_SYSTEMCTL lets tests (and unusual systems) substitute the systemctl binary.
  const program = Deno.env.get("LLM_SERVER_SYSTEMCTL") || "systemctl";
  let status: Deno.CommandStatus;
  try {
    status = await new Deno.Command(program, { args, stdout: "inherit", stderr: "inherit" }).spawn().status;
  } catch (e) {
    throw new Error(`cannot run ${program}: ${e instanceof Error ? e.message : e}`);
  }
  if (!status.success) {
    throw new Error(`\`${program} ${args.join(" ")}\` failed with exit code ${status.code}`);
  }
}

async function writeFileAtomically(path: string, text: string, mode: number): Promise<void> {
  const temporary = `${dirname(path)}/.${path.split("/").pop()}.${Deno.pid}.tmp`;
  try {
    await Deno.writeTextFile(temporary, text, { mode });
    await Deno.chmod(temporary, mode);
    await Deno.rename(temporary, path);
  } catch (e) {
    await Deno.remove(temporary).catch(() => {});
    throw new Error(`cannot write ${path}: ${e instanceof Error ? e.message : e} (run as root?)`);
  }
}

async function createEnvFileIfMissing(path: string): Promise<void> {
  if (await exists(path)) return;
  await Deno.mkdir(dirname(path), { recursive: true, mode: 0o755 });
  await writeFileAtomically(path, ENV_FILE_TEMPLATE, 0o600);
  console.log(`Wrote ${path} (mode 600) for secrets such as LLM_SERVER_API_KEY`);
}

async function requireExecutable(path: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => null);
  if (!info?.isFile || ((info.mode ?? 0o111) & 0o111) === 0) {
    throw new UsageError(`${path} is not an executable file (pass --exec PATH to the llm-server executable)`);
  }
}

async function requireDirectory(path: string, what: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => null);
  if (!info?.isDirectory) throw new UsageError(`${what} ${path} is not a folder`);
}

async function requireFile(path: string, what: string): Promise<void> {
  const info = await Deno.stat(path).catch(() => null);
  if (!info?.isFile) throw new UsageError(`${what} ${path} does not exist (create it, mode 600)`);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.lstat(path).then(() => true, () => false);
}

function reportFailure(command: string, e: unknown): number {
  const message = e instanceof Error ? e.message : String(e);
  console.error(`error: ${message.startsWith(command) ? message : `${command}: ${message}`}`);
  return e instanceof UsageError ? 2 : 1;
}
