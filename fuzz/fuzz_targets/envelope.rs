//! The job envelope, as a worker decodes each delivery (`JobEnvelope::from_bytes`): never a
//! panic; an envelope that parses serialises to bytes that parse to the same envelope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_shared::JobEnvelope;

fuzz_target!(|data: &[u8]| {
    let Ok(envelope) = JobEnvelope::from_bytes(data) else {
        return;
    };
    let bytes = envelope.to_bytes();
    let again =
        JobEnvelope::from_bytes(&bytes).expect("a parsed envelope serialises to a valid one");
    // Payload floats may move by one ulp (serde_json's default float parsing), so the payload
    // is compared by shape; every other field exactly.
    assert_eq!(
        (
            again.v,
            again.id,
            &again.kind,
            again.attempt,
            again.max_attempts,
            again.timeout_ms,
            again.submitted_at
        ),
        (
            envelope.v,
            envelope.id,
            &envelope.kind,
            envelope.attempt,
            envelope.max_attempts,
            envelope.timeout_ms,
            envelope.submitted_at
        ),
    );
    assert_eq!(
        offload_shared::limits::json_depth(&again.payload),
        offload_shared::limits::json_depth(&envelope.payload)
    );
});
