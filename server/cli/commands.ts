// The command line around the server: `--version`, `install-service`, `uninstall-service`.
// main.ts calls runCliCommand first; null means "start the server with these arguments".
import { versionLine } from "./build_info.ts";
import { prepareEmbeddedEngineLibrary } from "./embedded_engine.ts";
import { installService, uninstallService } from "./service/install.ts";

export const CLI_USAGE = `Usage:
  llm-server --model-path DIR [server options]     start the server (see --help)
  llm-server --version                             print the version and the build (CPU/CUDA)
  llm-server install-service [--user NAME] [--env-file PATH] [--name NAME] [--unit-dir DIR]
                             [--exec PATH] [--no-enable] [--dry-run] -- <server options>
                                                   write, enable and explain a systemd unit
  llm-server uninstall-service [--name NAME] [--unit-dir DIR] [--dry-run]
                                                   stop, disable and remove that unit`;

/** Runs a CLI subcommand and returns its exit code, or null when argv is a normal server start. */
export async function runCliCommand(argv: string[]): Promise<number | null> {
  try {
    if (argv[0] === "install-service") return await installService(argv.slice(1));
    if (argv[0] === "uninstall-service") return await uninstallService(argv.slice(1));
    const ownArgs = argv.includes("--") ? argv.slice(0, argv.indexOf("--")) : argv;
    if (ownArgs.includes("--version")) {
      console.log(versionLine());
      return 0;
    }
    await prepareEmbeddedEngineLibrary();
    return null;
  } catch (e) {
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}
