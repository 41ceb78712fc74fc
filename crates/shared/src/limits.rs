//! Bounds on the JSON that crosses the wire, shared by the API (what it accepts at the door) and
//! the worker (what it sends back), so whatever one side lets through the other can carry.
//!
//! serde_json refuses to parse anything nested more than 128 levels deep. A job's payload sits
//! inside the envelope object, and a result inside an event object inside a batch array, so a
//! value of at most [`MAX_JSON_DEPTH`] levels leaves ample room below that parser limit.

use serde_json::Value;

/// The first `max` characters of `text` (all of it if it is shorter), cut on a character
/// boundary: how a text from outside is bounded before it is kept or shown.
pub fn first_chars(text: &str, max: usize) -> &str {
    text.char_indices()
        .nth(max)
        .map_or(text, |(end, _)| &text[..end])
}

/// Deepest nesting of arrays and objects a payload or a result may have (see [`json_depth`]).
pub const MAX_JSON_DEPTH: usize = 64;

/// How deeply `value` nests arrays and objects: a scalar is 0, `[]` and `{}` are 1, `[[1]]` and
/// `{"a": {}}` are 2. Walks the value with its own stack, so an arbitrarily deep value (one a
/// handler built in memory, not parsed) cannot overflow the thread's stack.
///
/// ```
/// use offload_shared::limits::json_depth;
/// use serde_json::json;
///
/// assert_eq!(json_depth(&json!("text")), 0);
/// assert_eq!(json_depth(&json!({"a": [1, {"b": []}]})), 4);
/// ```
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, above)) = stack.pop() {
        let depth = above + 1;
        let is_container = |c: &&Value| matches!(c, Value::Array(_) | Value::Object(_));
        match value {
            Value::Array(items) => {
                stack.extend(items.iter().filter(is_container).map(|c| (c, depth)));
            }
            Value::Object(fields) => {
                stack.extend(fields.values().filter(is_container).map(|c| (c, depth)));
            }
            _ => continue,
        }
        deepest = deepest.max(depth);
    }
    deepest
}

/// Length in bytes of `value` serialised as compact JSON (as it travels in an event), counted
/// without building the text. Call only on a value whose [`json_depth`] is bounded: serde_json
/// serialises recursively.
pub fn json_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising a `Value` into a writer that never fails cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_chars_cuts_on_a_character_boundary() {
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("héllo", 5), "héllo");
        assert_eq!(first_chars("héllo", 50), "héllo");
        assert_eq!(first_chars("", 3), "");
    }

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for i in 0..levels {
            // Built by hand: `json!` would copy `v` through serde, recursively.
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Object(serde_json::Map::from_iter([("k".to_owned(), v)]))
            };
        }
        v
    }

    #[test]
    fn depth_counts_nested_arrays_and_objects() {
        let cases = [
            (json!(null), 0, "a scalar"),
            (json!([]), 1, "an empty array"),
            (json!({}), 1, "an empty object"),
            (json!([1, [2], 3]), 2, "the deepest branch counts"),
            (
                json!({"a": 1, "b": {"c": [[]]}}),
                4,
                "objects and arrays mixed",
            ),
            (nested(MAX_JSON_DEPTH), MAX_JSON_DEPTH, "exactly the limit"),
        ];
        for (value, depth, why) in cases {
            assert_eq!(json_depth(&value), depth, "{why}: {value}");
        }
    }

    #[test]
    fn depth_of_a_value_far_deeper_than_any_parser_allows_does_not_overflow_the_stack() {
        let deep = nested(200_000);
        assert_eq!(json_depth(&deep), 200_000);
        // Dropping a Value recurses; take it apart by hand so the test itself is safe.
        let mut v = deep;
        loop {
            v = match v {
                Value::Array(mut items) => items.pop().unwrap_or(Value::Null),
                Value::Object(mut fields) => fields.remove("k").unwrap_or(Value::Null),
                _ => break,
            };
        }
    }

    #[test]
    fn len_is_the_compact_serialisation_length() {
        for value in [
            json!(null),
            json!("é and \"quotes\""),
            json!({"a": [1, 2.5, true], "b": {"c": "d"}}),
        ] {
            let text = serde_json::to_vec(&value).expect("serialises");
            assert_eq!(json_len(&value), text.len(), "{value}");
        }
    }
}
