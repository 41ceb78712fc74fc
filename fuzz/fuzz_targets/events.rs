//! A lifecycle event message, as the API decodes each delivery (`JobEvent::parse_message`):
//! never a panic, at least one result per message (but an empty batch), and every event read serialises to bytes
//! that parse to the same event (but its result's floats, compared by shape).
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_shared::events::JobEvent;

fuzz_target!(|data: &[u8]| {
    let results = JobEvent::parse_message(data);
    // Only an empty batch (`[]`) yields nothing: anything else is at least one result.
    let empty_batch =
        serde_json::from_slice::<Vec<serde_json::Value>>(data).is_ok_and(|v| v.is_empty());
    assert!(
        !results.is_empty() || empty_batch,
        "a message yields at least one result"
    );
    for event in results.into_iter().flatten() {
        let again = JobEvent::from_bytes(&event.to_bytes())
            .expect("a parsed event serialises to a valid one");
        let mut a = again.clone();
        let mut b = event.clone();
        let depth = |e: &JobEvent| e.result.as_ref().map(offload_shared::limits::json_depth);
        assert_eq!(depth(&a), depth(&b));
        a.result = None;
        b.result = None;
        assert_eq!(a, b);
        // A batch of one reads back as that one event.
        let batch = JobEvent::batch_to_bytes(std::slice::from_ref(&event));
        assert_eq!(JobEvent::parse_message(&batch).len(), 1);
    }
});
