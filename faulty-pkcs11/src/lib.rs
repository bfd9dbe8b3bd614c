//! faulty-pkcs11: a PKCS#11 module for tests, never for production.
//!
//! It loads the real module named by `FAULTY_PKCS11_MODULE`, hands out a
//! 2.40 function list whose every entry forwards to the real module's
//! function, and before forwarding consults the fault plan (`plan.rs`, the
//! control file named by `FAULTY_PKCS11_CONTROL`), which may make the call
//! fail with a chosen CKR code or stall first. See README.md.
//!
//! Only `C_GetFunctionList` is exported: without `C_GetInterface`, cryptoki
//! falls back to the 2.40 list. No panic crosses the FFI boundary: every
//! entry point runs its body under `catch_unwind` and answers
//! CKR_GENERAL_ERROR if it panicked.

#![allow(non_snake_case)]

mod log;
mod plan;

use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use cryptoki_sys::*;

/// The real module: kept loaded for the life of the process.
struct Real {
    _lib: libloading::Library,
    list: CK_FUNCTION_LIST,
}

static REAL: OnceLock<Result<Real, String>> = OnceLock::new();
/// The list handed out by `C_GetFunctionList`; built once, never freed.
static LIST: OnceLock<CK_FUNCTION_LIST> = OnceLock::new();

fn real() -> Option<&'static Real> {
    REAL.get_or_init(|| {
        let loaded = load_real();
        if let Err(e) = &loaded {
            log::line(&format!("error {e}"));
            eprintln!("faulty-pkcs11: {e}");
        }
        loaded
    })
    .as_ref()
    .ok()
}

fn load_real() -> Result<Real, String> {
    let path = std::env::var_os("FAULTY_PKCS11_MODULE")
        .ok_or("FAULTY_PKCS11_MODULE is not set: name the real PKCS#11 module")?;
    // SAFETY: loading a PKCS#11 module runs its initialisers, which is what
    // loading any PKCS#11 module means.
    let lib = unsafe { libloading::Library::new(&path) }
        .map_err(|e| format!("cannot load {}: {e}", path.to_string_lossy()))?;
    let list = {
        // SAFETY: the symbol has the type the PKCS#11 standard gives it.
        let get = unsafe {
            lib.get::<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV>(
                b"C_GetFunctionList\0",
            )
        }
        .map_err(|e| format!("{}: no C_GetFunctionList: {e}", path.to_string_lossy()))?;
        let mut ptr: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
        // SAFETY: `ptr` is a valid place for the module to write a pointer.
        let rv = unsafe { get(&mut ptr) };
        if rv != CKR_OK || ptr.is_null() {
            return Err(format!(
                "{}: C_GetFunctionList returned {rv:#x}",
                path.to_string_lossy()
            ));
        }
        // SAFETY: on CKR_OK the module points at its function list, which
        // lives as long as the module stays loaded (for ever, here).
        unsafe { *ptr }
    };
    Ok(Real { _lib: lib, list })
}

/// Runs an entry point's body; a panic becomes CKR_GENERAL_ERROR instead of
/// unwinding into C.
fn guard(body: impl FnOnce() -> CK_RV) -> CK_RV {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(CKR_GENERAL_ERROR)
}

/// Logs the calls tests look for, then asks the plan: `Some(rv)` means fail
/// with `rv` without forwarding. A stall happens inside, before returning.
fn before_call(name: &'static str) -> Option<CK_RV> {
    if name == "C_Initialize" || name == "C_Finalize" {
        log::line(&format!("call {name}"));
    }
    plan::before_call(name)
}

/// The only exported symbol.
///
/// # Safety
///
/// `list` must be null or point to writable memory for one pointer, as the
/// PKCS#11 standard requires of the caller.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    guard(|| {
        if list.is_null() {
            return CKR_ARGUMENTS_BAD;
        }
        let Some(real) = real() else {
            return CKR_GENERAL_ERROR;
        };
        let ours = LIST.get_or_init(|| build_list(&real.list));
        // SAFETY: checked non-null above; the caller provides the place. The
        // list is never written through this pointer (callers copy it).
        unsafe { *list = ours as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
        CKR_OK
    })
}

/// What a real token does besides returning the error: a failed
/// single-part C_Encrypt or C_Decrypt ends the active operation (PKCS#11
/// 2.40, 5.8 and 5.9), so an injected failure ends the real module's
/// operation too, or the session's next C_EncryptInit would meet
/// CKR_OPERATION_ACTIVE. Other functions: nothing.
macro_rules! on_injected_failure {
    (C_Encrypt, $f:ident, $s:ident, $data:ident, $len:ident, $out:ident, $out_len:ident) => {
        // SAFETY: the caller's session and input, as the real call would get.
        unsafe { finish_operation($f, $s, $data, $len) }
    };
    (C_Decrypt, $f:ident, $s:ident, $data:ident, $len:ident, $out:ident, $out_len:ident) => {
        // SAFETY: as above.
        unsafe { finish_operation($f, $s, $data, $len) }
    };
    ($other:ident, $f:ident $(, $arg:ident)*) => {};
}

type SinglePart = unsafe extern "C" fn(
    CK_SESSION_HANDLE,
    *mut CK_BYTE,
    CK_ULONG,
    *mut CK_BYTE,
    *mut CK_ULONG,
) -> CK_RV;

/// Runs a single-part operation to completion into a scratch buffer and
/// drops the result.
///
/// # Safety
///
/// `data` must point to `len` readable bytes, as for the real call.
unsafe fn finish_operation(f: SinglePart, s: CK_SESSION_HANDLE, data: *mut CK_BYTE, len: CK_ULONG) {
    let mut out_len: CK_ULONG = 0;
    // SAFETY: a length query: no output pointer.
    if unsafe { f(s, data, len, std::ptr::null_mut(), &mut out_len) } != CKR_OK {
        return; // a failed call has ended the operation already
    }
    let mut scratch = vec![0u8; usize::try_from(out_len).unwrap_or(0).max(1)];
    // SAFETY: `scratch` holds `out_len` bytes.
    let _ = unsafe { f(s, data, len, scratch.as_mut_ptr(), &mut out_len) };
    scratch.fill(0);
}

/// Defines one forwarder per function of CK_FUNCTION_LIST (except
/// C_GetFunctionList), `NAMES` (their names, which the plan accepts), and
/// `build_list`, which sets each entry the real module has to our forwarder
/// and leaves the others None.
macro_rules! forwarders {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        pub(crate) const NAMES: &[&str] = &[$(stringify!($name)),*];

        $(
            unsafe extern "C" fn $name($($arg: $ty),*) -> CK_RV {
                guard(|| {
                    let Some(f) = real().and_then(|r| r.list.$name) else {
                        return CKR_FUNCTION_NOT_SUPPORTED;
                    };
                    if let Some(rv) = before_call(stringify!($name)) {
                        on_injected_failure!($name, f $(, $arg)*);
                        return rv;
                    }
                    // SAFETY: the caller's arguments, passed unchanged to the
                    // real module's function of the same type.
                    unsafe { f($($arg),*) }
                })
            }
        )*

        fn build_list(real: &CK_FUNCTION_LIST) -> CK_FUNCTION_LIST {
            CK_FUNCTION_LIST {
                version: real.version,
                C_GetFunctionList: Some(C_GetFunctionList),
                $($name: if real.$name.is_some() { Some($name) } else { None },)*
            }
        }
    };
}

forwarders! {
    C_Initialize(a: *mut c_void);
    C_Finalize(a: *mut c_void);
    C_GetInfo(a: *mut CK_INFO);
    C_GetSlotList(a: CK_BBOOL, b: *mut CK_SLOT_ID, c: *mut CK_ULONG);
    C_GetSlotInfo(a: CK_SLOT_ID, b: *mut CK_SLOT_INFO);
    C_GetTokenInfo(a: CK_SLOT_ID, b: *mut CK_TOKEN_INFO);
    C_GetMechanismList(a: CK_SLOT_ID, b: *mut CK_MECHANISM_TYPE, c: *mut CK_ULONG);
    C_GetMechanismInfo(a: CK_SLOT_ID, b: CK_MECHANISM_TYPE, c: *mut CK_MECHANISM_INFO);
    C_InitToken(a: CK_SLOT_ID, b: *mut CK_UTF8CHAR, c: CK_ULONG, d: *mut CK_UTF8CHAR);
    C_InitPIN(a: CK_SESSION_HANDLE, b: *mut CK_UTF8CHAR, c: CK_ULONG);
    C_SetPIN(a: CK_SESSION_HANDLE, b: *mut CK_UTF8CHAR, c: CK_ULONG, d: *mut CK_UTF8CHAR, e: CK_ULONG);
    C_OpenSession(a: CK_SLOT_ID, b: CK_FLAGS, c: *mut c_void, d: CK_NOTIFY, e: *mut CK_SESSION_HANDLE);
    C_CloseSession(a: CK_SESSION_HANDLE);
    C_CloseAllSessions(a: CK_SLOT_ID);
    C_GetSessionInfo(a: CK_SESSION_HANDLE, b: *mut CK_SESSION_INFO);
    C_GetOperationState(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG);
    C_SetOperationState(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: CK_OBJECT_HANDLE, e: CK_OBJECT_HANDLE);
    C_Login(a: CK_SESSION_HANDLE, b: CK_USER_TYPE, c: *mut CK_UTF8CHAR, d: CK_ULONG);
    C_Logout(a: CK_SESSION_HANDLE);
    C_CreateObject(a: CK_SESSION_HANDLE, b: *mut CK_ATTRIBUTE, c: CK_ULONG, d: *mut CK_OBJECT_HANDLE);
    C_CopyObject(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE, c: *mut CK_ATTRIBUTE, d: CK_ULONG, e: *mut CK_OBJECT_HANDLE);
    C_DestroyObject(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE);
    C_GetObjectSize(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE, c: *mut CK_ULONG);
    C_GetAttributeValue(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE, c: *mut CK_ATTRIBUTE, d: CK_ULONG);
    C_SetAttributeValue(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE, c: *mut CK_ATTRIBUTE, d: CK_ULONG);
    C_FindObjectsInit(a: CK_SESSION_HANDLE, b: *mut CK_ATTRIBUTE, c: CK_ULONG);
    C_FindObjects(a: CK_SESSION_HANDLE, b: *mut CK_OBJECT_HANDLE, c: CK_ULONG, d: *mut CK_ULONG);
    C_FindObjectsFinal(a: CK_SESSION_HANDLE);
    C_EncryptInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_Encrypt(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_EncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_EncryptFinal(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG);
    C_DecryptInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_Decrypt(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptFinal(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG);
    C_DigestInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM);
    C_Digest(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DigestUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_DigestKey(a: CK_SESSION_HANDLE, b: CK_OBJECT_HANDLE);
    C_DigestFinal(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG);
    C_SignInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_Sign(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_SignUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_SignFinal(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: *mut CK_ULONG);
    C_SignRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_SignRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_VerifyInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_Verify(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: CK_ULONG);
    C_VerifyUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_VerifyFinal(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_VerifyRecoverInit(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE);
    C_VerifyRecover(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DigestEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptDigestUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_SignEncryptUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_DecryptVerifyUpdate(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG, d: *mut CK_BYTE, e: *mut CK_ULONG);
    C_GenerateKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: *mut CK_ATTRIBUTE, d: CK_ULONG, e: *mut CK_OBJECT_HANDLE);
    C_GenerateKeyPair(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: *mut CK_ATTRIBUTE, d: CK_ULONG, e: *mut CK_ATTRIBUTE, f: CK_ULONG, g: *mut CK_OBJECT_HANDLE, h: *mut CK_OBJECT_HANDLE);
    C_WrapKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE, d: CK_OBJECT_HANDLE, e: *mut CK_BYTE, f: *mut CK_ULONG);
    C_UnwrapKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE, d: *mut CK_BYTE, e: CK_ULONG, f: *mut CK_ATTRIBUTE, g: CK_ULONG, h: *mut CK_OBJECT_HANDLE);
    C_DeriveKey(a: CK_SESSION_HANDLE, b: *mut CK_MECHANISM, c: CK_OBJECT_HANDLE, d: *mut CK_ATTRIBUTE, e: CK_ULONG, f: *mut CK_OBJECT_HANDLE);
    C_SeedRandom(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_GenerateRandom(a: CK_SESSION_HANDLE, b: *mut CK_BYTE, c: CK_ULONG);
    C_GetFunctionStatus(a: CK_SESSION_HANDLE);
    C_CancelFunction(a: CK_SESSION_HANDLE);
    C_WaitForSlotEvent(a: CK_FLAGS, b: *mut CK_SLOT_ID, c: *mut c_void);
}
