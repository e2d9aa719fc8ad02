/**
 * A short run of scripts/load_test.ts (the long one is run by hand: --minutes 2): concurrent streaming and
 * non-streaming clients on stories260K, a third disconnecting at random points, a queue limit that must answer
 * 503. Zero 5xx and timeouts, every finished output equal to its solo output, nothing held at the end.
 */
import { assert, assertEquals } from "./assert.ts";
import { STORIES } from "./helpers.ts";
import { HAVE_ENGINE } from "./real_server.ts";
import { runLoad } from "../scripts/load_test.ts";

Deno.test({
  name: "load smoke: dropped clients, queue limit 503s, outputs equal solo, no KV or request state left",
  ignore: !HAVE_ENGINE,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await runLoad({ seconds: 12, concurrency: 64, modelPath: STORIES, seed: 7, log: () => {} });
    console.log(
      `load smoke: ${r.requests} requests, ${r.completed} completed, ${r.disconnects} disconnects, ` +
        `${r.busy503} 503s, RSS ${(r.rssWarmBytes! / 2 ** 20).toFixed(0)} -> ${
          (r.rssEndBytes! / 2 ** 20).toFixed(0)
        } MiB`,
    );
    assertEquals(r.errors, []);
    assertEquals([r.server5xx, r.timeouts, r.mismatches, r.other4xx, r.clientErrors], [0, 0, 0, 0, 0]);
    assert(r.completed >= 50, `only ${r.completed} requests completed`);
    assert(r.disconnects >= 10, `only ${r.disconnects} clients disconnected`);
    assert(r.busy503 > 0, "the queue limit was never reached");
    assertEquals([r.liveAtEnd, r.heldSlotsAtEnd], [0, 0]);
    assert(r.integrityOk, "KV pool integrity");
    assertEquals(r.freeAfterFlush, r.totalSlots);
    assert(r.ok);
  },
});
