//! The operator's kinds file (`OFFLOAD_KINDS_FILE`): a YAML or JSON list of kind specs that
//! locks the deployment down to exactly those kinds. Read once at start; anything wrong in it
//! stops the start with the file's name and the fix.

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

use offload_shared::kinds::KindSpec;

/// The fields a kind spec in the file may have: a misspelt one is an error, not ignored.
const FIELDS: [&str; 8] = [
    "name",
    "queue",
    "payload_schema",
    "max_attempts",
    "timeout_s",
    "priority",
    "max_running",
    "long",
];

/// The kinds file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the kinds file {path} (OFFLOAD_KINDS_FILE) cannot be used: {reason}. It must be a YAML or \
     JSON list of kinds, e.g. `- name: resize` / `  queue: images` / `  payload_schema: {{type: object}}`, \
     each with a valid name and JSON Schema; fix it, or unset OFFLOAD_KINDS_FILE to accept the kinds workers announce"
)]
pub struct KindsFileError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Reads and checks the kinds file at `path`.
pub fn load(path: &Path) -> Result<Vec<KindSpec>, KindsFileError> {
    let failed = |reason: String| KindsFileError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(format!("cannot read it: {e}")))?;
    parse(&text).map_err(failed)
}

/// Parses the text of a kinds file (YAML, of which JSON is a subset) and checks each spec.
pub fn parse(text: &str) -> Result<Vec<KindSpec>, String> {
    let items: Vec<Value> =
        yaml_serde::from_str(text).map_err(|e| format!("it is not a list of kinds: {e}"))?;
    if items.is_empty() {
        return Err("it lists no kinds, so no job would be accepted".to_owned());
    }
    let mut seen = BTreeSet::new();
    let mut specs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = |reason: String| format!("kind [{i}]: {reason}");
        if let Some(fields) = item.as_object()
            && let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str()))
        {
            return Err(at(format!(
                "unknown field {unknown:?} (a kind has {})",
                FIELDS.join(", ")
            )));
        }
        let spec: KindSpec = serde_json::from_value(item).map_err(|e| at(e.to_string()))?;
        spec.compile().map_err(|e| at(e.to_string()))?;
        if !seen.insert(spec.name.clone()) {
            return Err(at(format!("kind {} is listed twice", spec.name)));
        }
        specs.push(spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_may_pin_its_priority_and_its_limit() {
        let specs = parse("- name: urgent\n  priority: high\n  max_running: 3\n").expect("valid");
        assert_eq!(specs[0].priority, Some(offload_shared::Priority::High));
        assert_eq!(specs[0].max_running, Some(3));
        assert!(!specs[0].long, "not long unless it says so");
        let long = parse("- name: export\n  long: true\n  timeout_s: 86400\n").expect("valid");
        assert!(long[0].long);
        for bad in [
            "- name: x\n  priority: soon\n",
            "- name: x\n  max_running: 0\n",
            "- name: x\n  long: true\n  timeout_s: 86401\n",
            "- name: x\n  long: often\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn yaml_and_json_files_give_the_same_specs() {
        let yaml = "- name: resize\n  queue: images\n  payload_schema:\n    type: object\n    required: [width]\n  max_attempts: 3\n- name: noop\n";
        let json = r#"[{"name":"resize","queue":"images","payload_schema":{"type":"object","required":["width"]},"max_attempts":3},{"name":"noop"}]"#;
        let from_yaml = parse(yaml).expect("yaml");
        assert_eq!(from_yaml, parse(json).expect("json"));
        assert_eq!(from_yaml.len(), 2);
        assert_eq!(from_yaml[0].queue.as_str(), "images");
        assert_eq!(from_yaml[0].max_attempts, Some(3));
        assert_eq!(from_yaml[1].queue.as_str(), "default");
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let cases = [
            ("", "lists no kinds"),
            ("name: resize", "not a list"),
            ("[]", "lists no kinds"),
            ("- name: Resize", "kind [0]"),
            (
                "- name: resize\n  queue: images\n  max_attemps: 3",
                "unknown field \"max_attemps\"",
            ),
            (
                "- name: resize\n  payload_schema: {type: 12}",
                "kind [0]: kind resize",
            ),
            ("- name: resize\n  max_attempts: 0", "max_attempts is 0"),
            (
                "- name: resize\n- name: resize",
                "kind [1]: kind resize is listed twice",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let err = load(Path::new("/nonexistent/kinds.yaml")).expect_err("missing");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/kinds.yaml"), "{text}");
        assert!(text.contains("unset OFFLOAD_KINDS_FILE"), "{text}");
    }
}
