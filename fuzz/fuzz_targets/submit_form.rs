//! The HTML form of `POST /jobs` (crates/api/src/submit/form.rs, compiled here on its own):
//! never a panic; a form that decodes, encoded again, decodes to the same fields.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/api/src/submit/form.rs"]
mod form;

fuzz_target!(|data: &[u8]| {
    let Ok(fields) = form::decode(data) else {
        return;
    };
    let mut pairs = vec![("kind", fields.kind.clone())];
    if let Some(payload) = &fields.payload {
        pairs.push(("payload", payload.to_string()));
    }
    if let Some(n) = fields.max_attempts {
        pairs.push(("max_attempts", n.to_string()));
    }
    if let Some(n) = fields.timeout_s {
        pairs.push(("timeout_s", n.to_string()));
    }
    let encoded = serde_urlencoded::to_string(&pairs).expect("encodes");
    let again = form::decode(encoded.as_bytes()).expect("an encoded form decodes");
    assert_eq!(again.kind, fields.kind);
    assert_eq!(
        (again.max_attempts, again.timeout_s),
        (fields.max_attempts, fields.timeout_s)
    );
    let depth = |f: &form::FormFields| f.payload.as_ref().map(offload_shared::limits::json_depth);
    assert_eq!(depth(&again), depth(&fields));
});
