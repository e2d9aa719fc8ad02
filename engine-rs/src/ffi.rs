//! The C ABI of include/engine.h. Every export catches panics (LLM_ERR_PANIC) and records its
//! failure message on the handle (llm_engine_last_error); no globals, no thread-locals.

use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use crate::engine::{status, Engine, EngineError, WaitResult};
use crate::runner::panic_message;

pub const ABI_VERSION: u32 = 1;

/// The opaque `llm_engine` handle.
pub struct LlmEngine {
    engine: Engine,
    last_error: Mutex<String>,
}

impl LlmEngine {
    /// Non-ABI constructor: wraps an engine (e.g. over a fake model in tests) in a handle that the
    /// extern "C" functions accept. Free it with `llm_engine_free`.
    pub fn into_raw(engine: Engine) -> *mut LlmEngine {
        Box::into_raw(Box::new(LlmEngine { engine, last_error: Mutex::new(String::new()) }))
    }

    fn set_error(&self, msg: &str) {
        let mut e = self.last_error.lock().unwrap_or_else(|p| p.into_inner());
        e.clear();
        e.push_str(msg);
    }
}

/// Runs `f` on the handle; failures and panics become status codes with the message recorded.
fn with_handle(h: *mut LlmEngine, f: impl FnOnce(&LlmEngine) -> Result<(), EngineError>) -> i32 {
    if h.is_null() {
        return status::INVALID_ARGUMENT;
    }
    // SAFETY: a non-null handle comes from llm_engine_create/into_raw and is live until free.
    let handle = unsafe { &*h };
    match catch_unwind(AssertUnwindSafe(|| f(handle))) {
        Ok(Ok(())) => status::OK,
        Ok(Err(e)) => {
            handle.set_error(&e.message);
            e.code
        }
        Err(p) => {
            handle.set_error(&format!("panic: {}", panic_message(&p)));
            status::PANIC
        }
    }
}

/// SAFETY: the caller guarantees `ptr` points to `len` readable bytes (or len is 0).
unsafe fn input<'a>(ptr: *const u8, len: usize) -> Result<&'a [u8], EngineError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(EngineError::new(status::INVALID_ARGUMENT, "null input pointer"));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

/// SAFETY: the caller guarantees `buf` points to `cap` writable bytes (or cap is 0).
unsafe fn output<'a>(buf: *mut u8, cap: usize) -> Result<&'a mut [u8], EngineError> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if buf.is_null() {
        return Err(EngineError::new(status::INVALID_ARGUMENT, "null output buffer"));
    }
    Ok(std::slice::from_raw_parts_mut(buf, cap))
}

/// Copies `text` into (buf, cap) or reports the size needed.
fn write_text(text: &str, buf: *mut u8, cap: usize, written: *mut usize) -> Result<(), EngineError> {
    if written.is_null() {
        return Err(EngineError::new(status::INVALID_ARGUMENT, "null written pointer"));
    }
    // SAFETY: checked non-null; the caller owns it.
    unsafe { *written = text.len() };
    if text.len() > cap {
        return Err(EngineError::new(status::BUFFER_TOO_SMALL, format!("buffer of {cap} bytes, {} needed", text.len())));
    }
    // SAFETY: per the ABI, buf holds cap bytes.
    let out = unsafe { output(buf, cap)? };
    out[..text.len()].copy_from_slice(text.as_bytes());
    Ok(())
}

/// Writes a NUL-terminated, truncated copy of `msg` into (buf, cap).
fn write_c_string(msg: &str, buf: *mut c_char, cap: usize) {
    if buf.is_null() || cap == 0 {
        return;
    }
    let n = msg.len().min(cap - 1);
    // SAFETY: per the ABI, buf holds cap bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(msg.as_ptr(), buf as *mut u8, n);
        *buf.add(n) = 0;
    }
}

#[no_mangle]
pub extern "C" fn llm_abi_version() -> u32 {
    ABI_VERSION
}

/// # Safety
/// `config_json` holds `len` bytes; `out` is writable; `err_buf` holds `err_cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_create(
    config_json: *const u8,
    len: usize,
    out: *mut *mut LlmEngine,
    err_buf: *mut c_char,
    err_cap: usize,
) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(|| {
        if out.is_null() {
            return Err(EngineError::new(status::INVALID_ARGUMENT, "null output handle pointer"));
        }
        let json = input(config_json, len)?;
        Engine::create(json)
    }));
    match result {
        Ok(Ok(engine)) => {
            *out = LlmEngine::into_raw(engine);
            status::OK
        }
        Ok(Err(e)) => {
            write_c_string(&e.message, err_buf, err_cap);
            e.code
        }
        Err(p) => {
            write_c_string(&format!("panic: {}", panic_message(&p)), err_buf, err_cap);
            status::PANIC
        }
    }
}

/// # Safety
/// `engine` comes from llm_engine_create (or is NULL) and is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_free(engine: *mut LlmEngine) {
    if engine.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| drop(Box::from_raw(engine))));
}

/// # Safety
/// `buf` holds `cap` bytes.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_last_error(engine: *mut LlmEngine, buf: *mut c_char, cap: usize) -> usize {
    if engine.is_null() {
        return 0;
    }
    catch_unwind(AssertUnwindSafe(|| {
        let msg = (*engine).last_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        write_c_string(&msg, buf, cap);
        msg.len()
    }))
    .unwrap_or(0)
}

/// # Safety
/// `buf` holds `cap` bytes; `written` is writable.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_info(engine: *mut LlmEngine, buf: *mut u8, cap: usize, written: *mut usize) -> i32 {
    with_handle(engine, |h| write_text(h.engine.info_json(), buf, cap, written))
}

/// # Safety
/// `request_json` holds `len` bytes; `out_id` is writable.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_submit(
    engine: *mut LlmEngine,
    request_json: *const u8,
    len: usize,
    out_id: *mut u64,
) -> i32 {
    with_handle(engine, |h| {
        if out_id.is_null() {
            return Err(EngineError::new(status::INVALID_ARGUMENT, "null out_id pointer"));
        }
        let id = h.engine.submit(input(request_json, len)?)?;
        *out_id = id;
        Ok(())
    })
}

/// # Safety
/// `engine` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_abort(engine: *mut LlmEngine, id: u64) -> i32 {
    with_handle(engine, |h| h.engine.abort(id))
}

/// # Safety
/// `engine` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_abort_all(engine: *mut LlmEngine) -> i32 {
    with_handle(engine, |h| h.engine.abort_all())
}

/// # Safety
/// `engine` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_wait(engine: *mut LlmEngine, timeout_ms: i32) -> i32 {
    let mut result = 0;
    let code = with_handle(engine, |h| {
        result = match h.engine.wait(timeout_ms) {
            WaitResult::Pending(n) => n.min(i32::MAX as usize) as i32,
            WaitResult::Timeout => 0,
            WaitResult::Stopping => -status::SHUTDOWN,
        };
        Ok(())
    });
    if code == status::OK {
        result
    } else {
        -code
    }
}

/// # Safety
/// `buf` holds `cap` bytes; `written` is writable.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_drain(engine: *mut LlmEngine, buf: *mut u8, cap: usize, written: *mut usize) -> i32 {
    with_handle(engine, |h| {
        if written.is_null() {
            return Err(EngineError::new(status::INVALID_ARGUMENT, "null written pointer"));
        }
        let out = output(buf, cap)?;
        match h.engine.drain_into(out) {
            Ok(n) => {
                *written = n;
                Ok(())
            }
            Err(need) => {
                *written = need;
                Err(EngineError::new(status::BUFFER_TOO_SMALL, format!("buffer of {cap} bytes, {need} needed")))
            }
        }
    })
}

/// # Safety
/// `buf` holds `cap` bytes; `written` is writable.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_stats(engine: *mut LlmEngine, buf: *mut u8, cap: usize, written: *mut usize) -> i32 {
    with_handle(engine, |h| write_text(&h.engine.stats_json(), buf, cap, written))
}

/// # Safety
/// `engine` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn llm_engine_flush_cache(engine: *mut LlmEngine) -> i32 {
    with_handle(engine, |h| h.engine.flush_cache())
}
