//! Message bodies: reading their strings, writing messages, naming statements.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::SetChange;

/// The SQL that raises a refusal in the server itself (so that the transaction state stays the
/// server's: the error aborts an open transaction as any other would).
pub(super) fn refusal_sql(refusal: super::Refusal) -> String {
    let (code, message) = match refusal {
        super::Refusal::Pin(reason) => (
            "feature_not_supported",
            format!(
                "pgssl transaction pooling (pool.on_pin = refuse) does not run {reason}: it would tie this session to one repository connection"
            ),
        ),
        super::Refusal::Identity => (
            "insufficient_privilege",
            crate::proxy::identity::REFUSED.to_string(),
        ),
    };
    format!(
        "DO $pgssl$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = {}; END$pgssl$",
        crate::proxy::backend::reset::quoted(&message)
    )
}

pub(super) fn apply(sets: &mut Vec<(String, String)>, change: SetChange) {
    match change {
        SetChange::Set(name, value) => match sets.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => sets.push((name, value)),
        },
        SetChange::Reset(name) => sets.retain(|(n, _)| *n != name),
        SetChange::ResetAll => sets.clear(),
    }
}

/// The backend's name for a statement of this text and parameter types (`rest`: the Parse body
/// after the name): equal texts share it, different ones never do (128 bits of SHA-256).
pub(super) fn server_name(rest: &[u8], search_path: &[u8]) -> Bytes {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(rest);
    ctx.update(b"\0search_path\0");
    ctx.update(search_path);
    let digest = ctx.finish();
    let mut name = String::with_capacity(6 + 32);
    name.push_str("pgssl_");
    for b in &digest.as_ref()[..16] {
        name.push_str(&format!("{b:02x}"));
    }
    Bytes::from(name)
}

/// An ErrorResponse body with the backend's statement name replaced by the client's in its
/// message, detail and hint.
pub(super) fn renamed(body: &[u8], server: &[u8], client: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some(value) = cstr(tail) else { break };
        out.push(field);
        if matches!(field, b'M' | b'D' | b'H') {
            out.extend_from_slice(&replace(value, server, client));
        } else {
            out.extend_from_slice(value);
        }
        out.push(0);
        rest = &tail[value.len() + 1..];
    }
    out.push(0);
    out
}

pub(super) fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if !from.is_empty() && hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Appends one message: type, length, the parts.
pub fn put_message(out: &mut BytesMut, kind: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(5 + len);
    out.put_u8(kind);
    out.put_u32((4 + len) as u32);
    for p in parts {
        out.put_slice(p);
    }
}

/// The NUL-terminated string at the start of `b`, without its NUL.
pub(super) fn cstr(b: &[u8]) -> Option<&[u8]> {
    b.iter().position(|&c| c == 0).map(|n| &b[..n])
}

/// A NUL-terminated string and what follows it.
pub(super) fn split_cstr(b: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = b.iter().position(|&c| c == 0)?;
    Some((&b[..n], &b[n + 1..]))
}

/// A ParameterStatus body's name and value.
pub(super) fn param(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (name, rest) = split_cstr(body)?;
    Some((name, cstr(rest)?))
}

pub(super) fn find<'a>(params: &'a [(Bytes, Bytes)], name: &[u8]) -> Option<&'a [u8]> {
    params
        .iter()
        .find(|(n, _)| n.as_ref() == name)
        .map(|(_, v)| v.as_ref())
}

pub(super) fn set(params: &mut Vec<(Bytes, Bytes)>, name: &[u8], value: &[u8]) {
    match params.iter_mut().find(|(n, _)| n.as_ref() == name) {
        Some((_, v)) => *v = Bytes::copy_from_slice(value),
        None => params.push((Bytes::copy_from_slice(name), Bytes::copy_from_slice(value))),
    }
}

/// Sets `name` to `value` in a parameter list shared between clients (what they were told at login):
/// the list is copied only when the value changes, so clients told the same values share one.
pub fn set_shared(params: &mut Arc<Vec<(Bytes, Bytes)>>, name: &[u8], value: &[u8]) {
    if find(params, name) != Some(value) {
        set(Arc::make_mut(params), name, value);
    }
}
