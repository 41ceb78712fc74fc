//! A worker's announcement, as the API decodes it (crates/api/src/announcements/parse.rs,
//! compiled here on its own): never a panic, whatever the kind specs and their JSON Schemas
//! hold; every spec is either taken or refused with a reason.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/api/src/announcements/parse.rs"]
mod parse;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = parse::parse(data) {
        assert!(!parsed.announcement.worker.is_empty());
        assert!(
            parsed.announcement.kinds.is_empty(),
            "kinds are returned as specs"
        );
        for (_, reason) in &parsed.refused {
            assert!(!reason.is_empty(), "a refused spec says why");
        }
    }
});
