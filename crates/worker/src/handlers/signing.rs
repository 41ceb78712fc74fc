//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>) and the signing keys
//! they are made with, read from `OFFLOAD_WEBHOOK_SECRETS_FILE`.

use std::{collections::BTreeMap, fmt, path::Path};

use base64::Engine as _;

/// The signing keys, by name. Their values are never shown (`Debug` lists the names only).
#[derive(Clone, Default)]
pub struct SigningKeys {
    keys: BTreeMap<String, Vec<u8>>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl SigningKeys {
    /// Reads `path` (the value of `OFFLOAD_WEBHOOK_SECRETS_FILE`): see [`SigningKeys::parse`].
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "OFFLOAD_WEBHOOK_SECRETS_FILE: cannot read {}: {e}",
                path.display()
            )
        })?;
        Self::parse(&text)
            .map_err(|e| format!("OFFLOAD_WEBHOOK_SECRETS_FILE ({}): {e}", path.display()))
    }

    /// Parses lines `name=whsec_<base64>`; blank lines and `#` comments are skipped. An error
    /// names the line (never its secret).
    ///
    /// ```
    /// use offload_worker::handlers::signing::SigningKeys;
    /// let keys = SigningKeys::parse("# ours\nacme=whsec_MDEyMzQ1Njc4OWFiY2RlZg==\n").unwrap();
    /// assert!(keys.contains("acme"));
    /// assert!(SigningKeys::parse("acme=secret").unwrap_err().contains("line 1"));
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: &str| format!("line {}: {why}", n + 1);
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| at("expected name=whsec_<base64>"))?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(at("a key name is letters, digits, `-`, `_` and `.`"));
            }
            let encoded = value
                .trim()
                .strip_prefix("whsec_")
                .ok_or_else(|| at(&format!("the secret of {name} does not start with whsec_")))?;
            let secret = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| at(&format!("the secret of {name} is not base64 after whsec_")))?;
            if secret.len() < 16 {
                return Err(at(&format!(
                    "the secret of {name} is {} bytes; use at least 16 (24-64 recommended)",
                    secret.len()
                )));
            }
            if keys.insert(name.to_owned(), secret).is_some() {
                return Err(at(&format!("{name} is defined twice")));
            }
        }
        Ok(SigningKeys { keys })
    }

    /// True when a key is named `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.keys.contains_key(name)
    }

    /// The key named `name`, if any.
    pub(crate) fn get(&self, name: &str) -> Option<&[u8]> {
        self.keys.get(name).map(Vec::as_slice)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The `webhook-signature` value of a message: `v1,` and the base64 HMAC-SHA256 of
/// `<id>.<timestamp>.<body>` under `secret` (the decoded bytes after `whsec_`).
///
/// ```
/// use offload_worker::handlers::signing::signature;
/// let s = signature(b"secret-bytes-16!", "msg_1", 1_700_000_000, b"{}");
/// assert!(s.starts_with("v1,"));
/// ```
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(id.as_bytes());
    context.update(b".");
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(tag.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector() {
        // From the Standard Webhooks specification's reference libraries' tests.
        let secret = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("base64");
        assert_eq!(
            signature(
                &secret,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_second_vector_computed_with_pythons_hmac() {
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(
        //   b"0123456789abcdef0123456789abcdef", b"job-1.1700000000.hello", hashlib.sha256).digest()))'
        assert_eq!(
            signature(
                b"0123456789abcdef0123456789abcdef",
                "job-1",
                1_700_000_000,
                b"hello"
            ),
            PYTHON_VECTOR
        );
    }

    const PYTHON_VECTOR: &str = "v1,BtDKLxp/zuLR9JSQQ+8DAGIxY6MEtgFQh9W5QPnMd2Q=";

    #[test]
    fn keys_files_parse_and_errors_name_the_line_not_the_secret() {
        let keys = SigningKeys::parse(
            "# signing keys\n\n acme = whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nb.2=whsec_MDEyMzQ1Njc4OWFiY2RlZg==\n",
        )
        .expect("valid");
        assert_eq!(keys.len(), 2);
        assert!(keys.contains("acme") && keys.contains("b.2"));
        assert_eq!(format!("{keys:?}"), r#"{"acme", "b.2"}"#);
        for (text, why) in [
            ("acme", "line 1: expected name="),
            (
                "# c\nacme=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "line 2: the secret of acme does not start",
            ),
            (
                "acme=whsec_!!!hunter2!!!",
                "line 1: the secret of acme is not base64",
            ),
            ("acme=whsec_c2hvcnQ=", "use at least 16"),
            ("a b=whsec_MDEyMzQ1Njc4OWFiY2RlZg==", "key name"),
            (
                "a=whsec_MDEyMzQ1Njc4OWFiY2RlZg==\na=whsec_MDEyMzQ1Njc4OWFiY2RlZg==",
                "line 2: a is defined twice",
            ),
        ] {
            let e = SigningKeys::parse(text).expect_err(why);
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("MfKQ9"), "{e}");
        }
    }
}
