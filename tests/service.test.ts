// install-service / uninstall-service: the unit systemd would load, and every server argument surviving
// ExecStart= quoting. systemd-analyze (Debian's `systemd` package) is installed when missing; if that is
// impossible these tests fail rather than skip.
import assert from "node:assert/strict";
import { resolve } from "node:path";
import { formatExecLine, parseExecLine, quoteExecArgument } from "../server/cli/service/exec_line.ts";
import { renderUnit } from "../server/cli/service/unit.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const CLI = `${ROOT}tests/fixtures/compile_main.ts`;
const MODELS = Deno.env.get("LLM_MODELS_DIR") ?? `${ROOT}../shared/models`;
const MODEL = `${MODELS}/stories260K`;

// Arguments that break naive quoting: whitespace, both quotes, $ and % (expanded by systemd), backslashes,
// a lone ";" (a command separator when unquoted), an empty argument, non-ASCII, and a flag-looking value.
const NASTY_ARGS = [
  "two words",
  `say "hi"`,
  "it's",
  "$HOME",
  "${PATH}",
  "$$",
  "100%",
  "%h%n%%",
  "back\\slash",
  "trailing\\",
  "\\;",
  ";",
  "",
  "  padded  ",
  "naïve — ünïcode ✓",
  "--api-key=a b\"c$d%e\\f'g",
];
const CONTROL_ARGS = ["line\nbreak", "tab\there", "bell\x07", "del\x7f"];

function assertIncludes(text: string, part: string, message?: string) {
  assert.ok(text.includes(part), message ?? `expected ${JSON.stringify(part)} in:\n${text}`);
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const decoder = new TextDecoder();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function runCli(args: string[], env: Record<string, string> = {}) {
  return run(Deno.execPath(), ["run", "--allow-all", "--quiet", CLI, ...args], env);
}

let systemdAnalyzeReady: Promise<void> | null = null;
function ensureSystemdAnalyze(): Promise<void> {
  systemdAnalyzeReady ??= (async () => {
    const present = async () => (await run("systemd-analyze", ["--version"]).catch(() => null))?.code === 0;
    if (await present()) return;
    const env = { DEBIAN_FRONTEND: "noninteractive" };
    let install = await run("apt-get", ["install", "-y", "--no-install-recommends", "systemd"], env).catch(
      () => null,
    );
    if (install?.code !== 0) {
      await run("apt-get", ["update"], env).catch(() => null);
      install = await run("apt-get", ["install", "-y", "--no-install-recommends", "systemd"], env).catch(() =>
        null
      );
    }
    if (!(await present())) {
      throw new Error(
        `systemd-analyze is missing and apt-get could not install it: ${install?.stderr ?? "no apt-get"}`,
      );
    }
  })();
  return systemdAnalyzeReady;
}

async function verifyUnit(unit: string, name = "llm-server.service") {
  await ensureSystemdAnalyze();
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/${name}`, unit);
    return await run("systemd-analyze", ["verify", "--man=no", `${dir}/${name}`]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function fakeProgram(dir: string): Promise<string> {
  const path = `${dir}/llm-server`;
  await Deno.writeTextFile(path, "#!/bin/sh\nexit 0\n", { mode: 0o755 });
  return path;
}

Deno.test("parseExecLine reads systemd command lines written by hand", () => {
  assert.deepStrictEqual(
    parseExecLine(`/bin/echo one "two  three" 'four "five"' six\\sseven %% $$X "a\\x41\\n" x"y z"w \\;`),
    ["/bin/echo", "one", "two  three", 'four "five"', "six seven", "%", "$X", "aA\n", "xy zw", ";"],
  );
  for (
    const bad of [
      `/bin/echo "open`,
      "/bin/echo %h",
      "/bin/echo $HOME",
      "/bin/echo a ; /bin/b",
      "/bin/echo \\q",
    ]
  ) {
    let failed = false;
    try {
      parseExecLine(bad);
    } catch {
      failed = true;
    }
    assert.ok(failed, `expected ${JSON.stringify(bad)} to be rejected`);
  }
});

Deno.test("every argument survives ExecStart quoting", () => {
  const argv = ["/usr/local/bin/llm-server", ...NASTY_ARGS, ...CONTROL_ARGS];
  const line = formatExecLine(argv);
  assert(!line.includes("\n"), "an ExecStart value must stay on one line");
  assert.deepStrictEqual(parseExecLine(line), argv);
});

Deno.test("systemd itself unquotes each argument to the same text", async () => {
  // systemd-analyze prints the program path it parsed; each argument is tried as that path. $ is
  // expanded only at exec time, so systemd still shows it doubled.
  for (const arg of NASTY_ARGS) {
    const path = `/nonexistent/<${arg}>`;
    const result = await verifyUnit(`[Service]\nExecStart=${quoteExecArgument(path)}\n`);
    const shown = path.split("$").join("$$");
    const printed = result.stderr.match(/(?:Command (.*) is not executable: |special characters: (.*)$)/m);
    assert.ok(printed, `no parsed path in: ${result.stderr}`);
    assert.deepStrictEqual(printed[1] ?? printed[2], shown, `argument ${JSON.stringify(arg)}`);
  }
});

Deno.test("install-service --dry-run prints a unit systemd-analyze verify accepts, arguments intact", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const program = await fakeProgram(dir);
    const serverArgs = ["--model-path", MODEL, "--host", "0.0.0.0", "--port", "30001", ...NASTY_ARGS];
    const result = await runCli(["install-service", "--dry-run", "--exec", program, "--", ...serverArgs]);
    assert.deepStrictEqual(result.code, 0, result.stderr);
    const unit = result.stdout;
    const modelAbsolute = resolve(MODEL);
    for (
      const directive of [
        "Restart=on-failure",
        "User=llm-server",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        `ReadOnlyPaths="${modelAbsolute}"`,
        "EnvironmentFile=-/etc/llm-server/llm-server.env",
        "TimeoutStopSec=45s",
        "WantedBy=multi-user.target",
      ]
    ) {
      assert.ok(unit.split("\n").includes(directive), `missing ${directive} in:\n${unit}`);
    }
    const execStart = unit.match(/^ExecStart=(.*)$/m)![1];
    assert.deepStrictEqual(parseExecLine(execStart), [program, ...serverArgs.with(1, modelAbsolute)]);
    const verified = await verifyUnit(unit);
    assert.deepStrictEqual(verified.code, 0, verified.stderr);
    assert.deepStrictEqual(verified.stderr.trim(), "", "systemd-analyze verify must not warn");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install-service: relative model path made absolute, stop timeout above --shutdown-timeout, env file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const program = await fakeProgram(dir);
    await Deno.mkdir(`${dir}/models/tiny model`, { recursive: true });
    const envFile = `${dir}/secret.env`;
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-all",
      "--quiet",
      CLI,
      "install-service",
      "--dry-run",
      "--exec",
      program,
      "--user",
      "llm",
      "--env-file",
      envFile,
      "--",
      "--model-path=models/tiny model",
      "--shutdown-timeout",
      "100",
    ], {});
    // cwd-relative resolution is checked from the temp dir below; this run resolves against the test's cwd.
    assert.deepStrictEqual(result.code, 2, "a model folder that does not exist is refused");
    assertIncludes(result.stderr, "is not a folder");

    const inDir = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        "--quiet",
        CLI,
        "install-service",
        "--dry-run",
        "--exec",
        program,
        "--user",
        "llm",
        "--env-file",
        "secret.env",
        "--",
        "--model-path=models/tiny model",
        "--shutdown-timeout",
        "100",
      ],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const unit = new TextDecoder().decode(inDir.stdout);
    assert.deepStrictEqual(inDir.code, 0, new TextDecoder().decode(inDir.stderr));
    const execStart = parseExecLine(unit.match(/^ExecStart=(.*)$/m)![1]);
    assert.deepStrictEqual(execStart, [
      program,
      `--model-path=${dir}/models/tiny model`,
      "--shutdown-timeout",
      "100",
    ]);
    assertIncludes(unit, `ReadOnlyPaths="${dir}/models/tiny model"\n`);
    assertIncludes(unit, "TimeoutStopSec=115s\n");
    assertIncludes(unit, `EnvironmentFile=${envFile}\n`, "an explicit env file is required, not optional");
    assertIncludes(unit, "User=llm\n");
    const verified = await verifyUnit(unit);
    assert.deepStrictEqual(verified.code, 0, verified.stderr);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a model under /home is bound back read-only despite ProtectHome", async () => {
  const unit = renderUnit({
    name: "llm-server",
    executable: "/usr/local/bin/llm-server",
    serverArgs: ["--model-path", "/home/ann/m:1"],
    user: "llm-server",
    envFile: "/etc/llm-server/llm-server.env",
    envFileOptional: true,
    modelPath: "/home/ann/m:1",
    shutdownTimeoutSeconds: 30,
    build: "CPU",
  });
  assertIncludes(unit, "ProtectHome=tmpfs\n");
  assertIncludes(unit, 'BindReadOnlyPaths="/home/ann/m\\:1"\n');
  const verified = await verifyUnit(unit.replace("/usr/local/bin/llm-server", "/bin/true"));
  assert.deepStrictEqual(verified.code, 0, verified.stderr);
});

Deno.test("install-service writes and enables the unit; uninstall-service disables and removes it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const program = await fakeProgram(dir);
    const calls = `${dir}/systemctl.calls`;
    const systemctl = `${dir}/systemctl`;
    await Deno.writeTextFile(systemctl, `#!/bin/sh\necho "$*" >> '${calls}'\n`, { mode: 0o755 });
    await Deno.writeTextFile(`${dir}/llm.env`, "LLM_SERVER_API_KEY=secret\n", { mode: 0o600 });
    const env = { LLM_SERVER_SYSTEMCTL: systemctl };
    const install = await runCli([
      "install-service",
      "--unit-dir",
      dir,
      "--env-file",
      `${dir}/llm.env`,
      "--exec",
      program,
      "--",
      "--model-path",
      MODEL,
      "--chat-template",
      "/etc/x y.jinja",
    ], env);
    assert.deepStrictEqual(install.code, 0, install.stderr);
    const unitPath = `${dir}/llm-server.service`;
    assert.deepStrictEqual((await Deno.stat(unitPath)).mode! & 0o777, 0o644);
    assert.deepStrictEqual(await Deno.readTextFile(calls), "daemon-reload\nenable llm-server.service\n");
    for (const hint of ["systemctl start llm-server", "journalctl -u llm-server -f", "uninstall-service"]) {
      assertIncludes(install.stdout, hint);
    }
    assert.deepStrictEqual(
      parseExecLine((await Deno.readTextFile(unitPath)).match(/^ExecStart=(.*)$/m)![1]).slice(-2),
      ["--chat-template", "/etc/x y.jinja"],
    );

    await Deno.remove(calls);
    const uninstall = await runCli(["uninstall-service", "--unit-dir", dir], env);
    assert.deepStrictEqual(uninstall.code, 0, uninstall.stderr);
    assert.deepStrictEqual(
      await Deno.readTextFile(calls),
      "disable --now llm-server.service\ndaemon-reload\n",
    );
    assert.deepStrictEqual(await Deno.lstat(unitPath).then(() => true, () => false), false);
    assertIncludes(uninstall.stdout, `${dir}/llm.env`);

    const again = await runCli(["uninstall-service", "--unit-dir", dir], env);
    assert.deepStrictEqual(again.code, 1);
    assertIncludes(again.stderr, "not installed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install-service refuses bad command lines with one clear line and exit 2", async () => {
  const cases: [string[], string][] = [
    [["install-service", "--model-path", MODEL], "after `--`"],
    [["install-service", "--", "--host", "0.0.0.0"], "--model-path"],
    [["install-service", "--bogus", "--", "--model-path", MODEL], "unknown option --bogus"],
    [["install-service", "--user", "Root Admin", "--", "--model-path", MODEL], "not a valid user name"],
    [
      ["install-service", "--exec", "/nonexistent/llm-server", "--", "--model-path", MODEL],
      "not an executable",
    ],
    [
      ["install-service", "--exec", "/bin/true", "--", "--model-path", MODEL, "--shutdown-timeout", "soon"],
      "--shutdown-timeout",
    ],
  ];
  for (const [args, message] of cases) {
    const result = await runCli([...args.slice(0, 1), "--dry-run", ...args.slice(1)]);
    assert.deepStrictEqual(result.code, 2, `${args.join(" ")}: ${result.stderr}`);
    assertIncludes(result.stderr, message);
    assert.deepStrictEqual(result.stderr.trim().split("\n").length, 1, result.stderr);
  }
});

Deno.test("--version prints the version and the build", async () => {
  const { VERSION } = await import("../server/version.ts");
  const result = await runCli(["--version"]);
  assert.deepStrictEqual(result.code, 0, result.stderr);
  assert.match(result.stdout, new RegExp(`^llm-server ${VERSION.replaceAll(".", "\\.")} \\(build: CPU;`));
  const cuda = await runCli(["--version"], { LLM_SERVER_BUILD: "CUDA" });
  assertIncludes(cuda.stdout, "build: CUDA");
});

Deno.test("deploy/llm-server.service is what install-service writes for its documented example", async () => {
  const example = renderUnit({
    name: "llm-server",
    executable: "/usr/local/bin/llm-server",
    serverArgs: ["--model-path", "/srv/models/llama-3.2-1b-instruct", "--host", "0.0.0.0", "--port", "30000"],
    user: "llm-server",
    envFile: "/etc/llm-server/llm-server.env",
    envFileOptional: true,
    modelPath: "/srv/models/llama-3.2-1b-instruct",
    shutdownTimeoutSeconds: 30,
    build: "CPU",
  });
  assert.equal(await Deno.readTextFile(`${ROOT}deploy/llm-server.service`), example);
  const verified = await verifyUnit(example.replace("/usr/local/bin/llm-server", "/bin/true"));
  assert.equal(verified.code, 0, verified.stderr);
});
