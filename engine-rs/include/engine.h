/*
 * engine.h: the C ABI of libllm_engine (the Rust engine of llm-server).
 *
 * Conventions (after llama.h):
 * - Opaque handle `llm_engine`; every create has its free.
 * - Every function returns an `int32_t` status (LLM_OK = 0) unless stated otherwise; on failure the
 *   message is retrievable with llm_engine_last_error (per handle; no globals, no thread-locals).
 * - No panic crosses this boundary: every export catches it and returns LLM_ERR_PANIC.
 * - Buffers are caller-owned: the caller passes (buf, cap) and gets the byte count in *written.
 *   When a result does not fit, the call returns LLM_ERR_BUFFER_TOO_SMALL and *written holds the
 *   size needed; nothing is consumed.
 * - Text payloads (configs, requests, results, events) are UTF-8 JSON, not NUL-terminated.
 * - Long calls (llm_engine_create, llm_engine_wait) are meant to be called off the JS thread
 *   (Deno FFI `nonblocking: true`).
 */
#ifndef LLM_ENGINE_H
#define LLM_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define LLM_OK                    0 /* success */
#define LLM_ERR_INVALID_ARGUMENT  1 /* malformed JSON, bad parameter, null pointer */
#define LLM_ERR_LOAD              2 /* model files missing, unsupported or inconsistent */
#define LLM_ERR_NOT_FOUND         3 /* unknown request id */
#define LLM_ERR_BUFFER_TOO_SMALL  4 /* *written holds the size needed */
#define LLM_ERR_BUSY              5 /* refused while requests are in flight (flush) */
#define LLM_ERR_SHUTDOWN          6 /* the engine is stopping or stopped */
#define LLM_ERR_PANIC             7 /* a Rust panic was caught at the boundary */
#define LLM_ERR_INTERNAL          8 /* any other failure */
#define LLM_ERR_CAPACITY          9 /* the request can never fit (longer than context or KV pool) */

typedef struct llm_engine llm_engine;

/* ABI version; bumped on any incompatible change. */
uint32_t llm_abi_version(void);

/*
 * Loads a model and starts the scheduler thread. `config_json` (len bytes) holds:
 *   {"model_path": str, "load_format": "auto"|"dummy", "dtype": "auto"|"float32"|"bfloat16",
 *    "context_length": int|null, "max_total_tokens": int|null, "mem_fraction_static": float|null,
 *    "page_size": int, "max_running_requests": int|null, "max_prefill_tokens": int,
 *    "chunked_prefill_size": int (-1: off), "schedule_policy": "fcfs"|"lpm",
 *    "disable_radix_cache": bool, "random_seed": int, "threads": int|null,
 *    "decode_log_interval": int, "log_level": "debug"|"info"|"warning"|"error",
 *    "device": "auto"|"cpu"|"cuda" (default "auto"), "cuda_graph_max_bs": int (default 160),
 *    "disable_cuda_graph": bool (default false),
 *    "watchdog_timeout": seconds (300; 0 off: a step running longer sets stats watchdog_stalled),
 *    "tp_size": int (default 1), "tp_comm": "threads"|"nccl" (default "threads")}
 * Missing keys take SGLang's defaults.
 * tp_size > 1 splits the model over that many CPU ranks (threads of this process, each with
 * threads / tp_size compute threads and its own KV heads); the attention head count must be a
 * multiple of it and it must divide, or be a multiple of, the KV head count (LLM_ERR_LOAD otherwise).
 * tp_comm "nccl" joins the ranks' partial sums through NCCL on GPUs 0..tp_size-1 instead of shared
 * memory (a `cuda` build on a host with that many GPUs; LLM_ERR_LOAD otherwise).
 * device: "auto" runs on GPU 0 when the library was built with the `cuda` feature and CUDA works
 * there, else on the CPU after logging one line `CUDA not used: <reason>; running on CPU`; "cuda"
 * fails with LLM_ERR_LOAD and that reason instead; "cpu" never touches the CUDA driver. On the GPU
 * the KV pool lives in GPU memory (max_total_tokens: requested size, else sized by
 * mem_fraction_static of GPU memory, default 0.88), max_running_requests defaults to 256, and
 * decode batches up to cuda_graph_max_bs replay CUDA graphs unless disable_cuda_graph. On failure returns LLM_ERR_LOAD/INVALID_ARGUMENT and writes
 * the message (naming the file and tensor at fault) into err_buf (cap bytes, truncated, NUL-terminated).
 * Slow (loads weights): call nonblocking.
 */
int32_t llm_engine_create(const uint8_t *config_json, size_t len, llm_engine **out,
                          char *err_buf, size_t err_cap);

/* Stops the scheduler thread (aborting requests in flight) and frees the engine. NULL is a no-op. */
void llm_engine_free(llm_engine *engine);

/* Copies the handle's last error message into buf (NUL-terminated, truncated to cap);
 * returns the message's full length in bytes. */
size_t llm_engine_last_error(llm_engine *engine, char *buf, size_t cap);

/*
 * Static facts as JSON: {"architecture", "vocab_size", "context_len", "max_total_num_tokens",
 * "max_running_requests", "max_prefill_tokens", "chunked_prefill_size", "page_size",
 * "eos_token_ids": [..], "bos_token_id", "dtype", "weight_bytes", "kv_bytes", "threads", "tp_size", "device"}.
 * "device" is "cpu" or "cuda:0 <GPU name>"; "kv_bytes" is the pool on that device.
 */
int32_t llm_engine_info(llm_engine *engine, uint8_t *buf, size_t cap, size_t *written);

/*
 * Queues a generation request. `request_json`:
 *   {"input_ids": [int], "rid": str|null,
 *    "sampling": {"temperature": f (0 = greedy), "top_p": f, "top_k": int (-1 = all), "min_p": f,
 *                 "frequency_penalty": f, "presence_penalty": f, "repetition_penalty": f,
 *                 "max_new_tokens": int, "min_new_tokens": int, "stop_token_ids": [int],
 *                 "ignore_eos": bool, "logit_bias": {"id": f}, "seed": int|null},
 *    "return_logprob": bool, "top_logprobs_num": int, "logprob_start_len": int (-1: none)}
 * Parameters arrive validated by the server; the engine still rejects nonsense with
 * LLM_ERR_INVALID_ARGUMENT and a prompt that can never fit with LLM_ERR_CAPACITY.
 * On success *out_id is the engine's request id (>0), used by events and abort.
 */
int32_t llm_engine_submit(llm_engine *engine, const uint8_t *request_json, size_t len, uint64_t *out_id);

/* Aborts one request (its finish event says {"type":"abort"}); unknown or finished id: LLM_ERR_NOT_FOUND. */
int32_t llm_engine_abort(llm_engine *engine, uint64_t id);

/* Aborts every queued and running request. */
int32_t llm_engine_abort_all(llm_engine *engine);

/*
 * Blocks until events are pending or timeout_ms passes. Returns the number of pending event
 * records (>0), 0 on timeout, or -LLM_ERR_SHUTDOWN once the engine is stopping. Call nonblocking.
 */
int32_t llm_engine_wait(llm_engine *engine, int32_t timeout_ms);

/*
 * Moves pending events into buf as one JSON array (as many whole records as fit; the rest stay
 * queued). Each record, one per request per scheduler step:
 *   {"id": u64, "tokens": [int], "logprobs": [f]|absent, "top_logprobs": [[[id, f], ...]]|absent,
 *    "input_logprobs": [f|null]|absent, "input_top_logprobs": [...]|absent,
 *    "prompt_tokens": int, "cached_tokens": int, "completion_tokens": int,
 *    "finish": null | {"type": "length", "length": n} | {"type": "stop", "matched": token_id}
 *            | {"type": "abort", "message": str}}
 * A request's last record has a non-null "finish"; no record follows it.
 * If no record fits, returns LLM_ERR_BUFFER_TOO_SMALL with *written = bytes needed for the first.
 * With nothing pending writes "[]".
 */
int32_t llm_engine_drain(llm_engine *engine, uint8_t *buf, size_t cap, size_t *written);

/*
 * Live state as JSON: {"num_running_reqs", "num_queue_reqs", "token_usage", "used_slots",
 * "cached_slots", "held_slots", "free_slots", "max_total_num_tokens", "last_gen_throughput",
 * "cache_hit_rate", "num_retractions", "prompt_tokens_total", "generation_tokens_total", "integrity_ok",
 * "watchdog_stalled"}.
 * held_slots: slots requests hold (own pages and the cached prefixes they lock) = used minus evictable.
 */
int32_t llm_engine_stats(llm_engine *engine, uint8_t *buf, size_t cap, size_t *written);

/* Empties the radix cache and returns the pool to empty; LLM_ERR_BUSY while requests are in flight. */
int32_t llm_engine_flush_cache(llm_engine *engine);

#ifdef __cplusplus
}
#endif
#endif /* LLM_ENGINE_H */
