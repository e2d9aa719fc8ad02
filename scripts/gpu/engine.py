"""The prebuilt engine (libllm_engine.so) through its C ABI (ctypes): create, submit, wait + drain events."""
import ctypes
import json
import time


class Engine:
    def __init__(self, lib_path, config):
        self.lib = ctypes.CDLL(lib_path)
        self.lib.llm_engine_create.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p),
                                               ctypes.c_char_p, ctypes.c_size_t]
        self.lib.llm_engine_submit.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint64)]
        self.lib.llm_engine_wait.argtypes = [ctypes.c_void_p, ctypes.c_int32]
        self.lib.llm_engine_drain.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
        self.lib.llm_engine_info.argtypes = self.lib.llm_engine_drain.argtypes
        self.lib.llm_engine_free.argtypes = [ctypes.c_void_p]
        self.h = ctypes.c_void_p()
        err = ctypes.create_string_buffer(4096)
        raw = json.dumps(config).encode()
        st = self.lib.llm_engine_create(raw, len(raw), ctypes.byref(self.h), err, 4096)
        if st != 0:
            raise RuntimeError(f"llm_engine_create failed ({st}): {err.value.decode(errors='replace')}")
        self.buf = ctypes.create_string_buffer(1 << 24)

    def info(self):
        n = ctypes.c_size_t()
        self.lib.llm_engine_info(self.h, self.buf, len(self.buf), ctypes.byref(n))
        return json.loads(self.buf.raw[:n.value])

    def submit(self, ids, **sampling):
        req = json.dumps({"input_ids": ids, "sampling": sampling}).encode()
        rid = ctypes.c_uint64()
        st = self.lib.llm_engine_submit(self.h, req, len(req), ctypes.byref(rid))
        if st != 0:
            raise RuntimeError(f"submit failed: {st}")
        return rid.value

    def events(self, timeout_ms=1000):
        if self.lib.llm_engine_wait(self.h, timeout_ms) <= 0:
            return []
        n = ctypes.c_size_t()
        if self.lib.llm_engine_drain(self.h, self.buf, len(self.buf), ctypes.byref(n)) != 0:
            return []
        return json.loads(self.buf.raw[:n.value])

    def close(self):
        self.lib.llm_engine_free(self.h)


def run_requests(engine, prompts, **sampling):
    """Submits everything at once; returns per request (tokens, submit time, [event times])."""
    t0 = time.perf_counter()
    ids = {engine.submit(p, **sampling): i for i, p in enumerate(prompts)}
    toks = {i: [] for i in range(len(prompts))}
    times = {i: [] for i in range(len(prompts))}
    done = set()
    while len(done) < len(prompts):
        for ev in engine.events():
            i = ids[ev["id"]]
            if ev["tokens"]:
                toks[i].extend(ev["tokens"])
                times[i].append(time.perf_counter())
            if ev.get("finish") is not None:
                done.add(i)
        if time.perf_counter() - t0 > 900:
            raise RuntimeError("requests did not finish within 15 minutes")
    return toks, t0, times
