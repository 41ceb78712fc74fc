//! Reading an announcement: each kind spec on its own, so one invalid spec does not take the
//! worker's other kinds with it.

use serde_json::Value;

use offload_shared::{announce::Announcement, kinds::KindSpec};

/// Most kind specs one announcement may carry; the rest are refused.
const MAX_KINDS: usize = 256;

/// Longest worker name taken: it is stored and shown.
const MAX_WORKER_NAME: usize = 128;

/// An announcement as read: the announcement (its `kinds` empty), the specs that are valid,
/// and the ones that are not, as `(name as given, reason)`.
#[derive(Debug)]
pub struct Parsed {
    /// The announcement without its kinds.
    pub announcement: Announcement,
    /// The kind specs that parse and compile.
    pub specs: Vec<KindSpec>,
    /// The kind specs refused, with why.
    pub refused: Vec<(String, String)>,
}

/// Reads an announcement. Each kind spec is read on its own, so one invalid spec does not take
/// the worker's other kinds with it; a body that is not an announcement at all, or of another
/// wire version, is an error saying why.
pub fn parse(body: &[u8]) -> Result<Parsed, String> {
    let mut value: Value =
        serde_json::from_slice(body).map_err(|e| format!("not an announcement: {e}"))?;
    let kinds = match value.get_mut("kinds").map(Value::take) {
        Some(Value::Array(kinds)) => kinds,
        Some(_) => return Err("not an announcement: kinds is not a list".to_owned()),
        None => return Err("not an announcement: missing field `kinds`".to_owned()),
    };
    if let Some(object) = value.as_object_mut() {
        object.insert("kinds".to_owned(), Value::Array(Vec::new()));
    }
    let announcement = Announcement::from_bytes(value.to_string().as_bytes())?;
    if announcement.worker.is_empty() || announcement.worker.chars().count() > MAX_WORKER_NAME {
        return Err(format!(
            "the worker name must be 1 to {MAX_WORKER_NAME} characters"
        ));
    }
    let mut specs = Vec::new();
    let mut refused = Vec::new();
    for (i, item) in kinds.into_iter().enumerate() {
        if i >= MAX_KINDS {
            refused.push((
                "…".to_owned(),
                format!("more than {MAX_KINDS} kinds in one announcement"),
            ));
            break;
        }
        let given: String = item
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .chars()
            .take(64)
            .collect();
        let spec = serde_json::from_value::<KindSpec>(item)
            .map_err(|e| e.to_string())
            .and_then(|spec| spec.compile().map(|_| spec).map_err(|e| e.reason));
        match spec {
            Ok(spec) => specs.push(spec),
            Err(reason) => refused.push((given, reason)),
        }
    }
    Ok(Parsed {
        announcement,
        specs,
        refused,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn body(kinds: Value) -> Vec<u8> {
        json!({
            "v": 1, "worker": "w1", "state": "alive", "kinds": kinds, "queues": ["images"],
            "heartbeat_s": 5, "started_at": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:00:05Z",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn invalid_specs_are_refused_one_by_one_and_the_rest_is_read() {
        let parsed = parse(&body(json!([
            {"name": "resize", "queue": "images", "payload_schema": {"type": "object"}},
            {"name": "Bad Name"},
            {"name": "broken", "payload_schema": {"type": 12}},
        ])))
        .expect("parses");
        assert_eq!(parsed.announcement.worker, "w1");
        assert_eq!(parsed.specs.len(), 1);
        assert_eq!(parsed.specs[0].name.as_str(), "resize");
        let names: Vec<&str> = parsed.refused.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Bad Name", "broken"]);
    }

    #[test]
    fn what_is_not_an_announcement_is_refused_with_why() {
        let mut other_version: Value = serde_json::from_slice(&body(json!([]))).expect("json");
        other_version["v"] = json!(2);
        let other_version = other_version.to_string();
        let cases: [(&[u8], &str); 4] = [
            (b"not json", "not an announcement"),
            (br#"{"v":1}"#, "missing field `kinds`"),
            (br#"{"v":1,"kinds":{}}"#, "kinds is not a list"),
            (other_version.as_bytes(), "version 2"),
        ];
        for (body, want) in cases {
            let err = parse(body).expect_err(want);
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
