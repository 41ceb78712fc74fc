//! URLs that may carry a password (`OFFLOAD_AMQP_URL`, `OFFLOAD_DATABASE_URL`,
//! `OFFLOAD_MANAGEMENT_URL`): their checks, errors that never show the value, and filling in a
//! password read from a file.

/// The value parser of a URL that may carry a password. clap's own errors echo the value
/// ("invalid value 'amqp://user:secret@…'"); these name the setting and the problem only.
#[derive(Clone, Copy)]
pub(crate) struct SecretUrl(pub(crate) fn(&str) -> Result<(), String>);

impl clap::builder::TypedValueParser for SecretUrl {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        let name = match arg {
            Some(arg) => {
                let flag = arg.get_long().map(|l| format!("--{l}")).unwrap_or_default();
                match arg.get_env() {
                    Some(env) => format!("{flag} ({})", env.to_string_lossy()),
                    None => flag,
                }
            }
            None => "URL".to_owned(),
        };
        let invalid = |problem: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!(
                    "invalid {name}: {problem} (the value is not shown: it may hold a password)\n"
                ),
            )
            .with_cmd(cmd)
        };
        let raw = value
            .to_str()
            .ok_or_else(|| invalid("not valid UTF-8".to_owned()))?;
        (self.0)(raw).map_err(|problem| invalid(without_secrets(&problem, raw)))?;
        Ok(raw.to_owned())
    }
}

/// `problem` with `raw` (a URL) and its password taken out, for an error message.
pub(crate) fn without_secrets(problem: &str, raw: &str) -> String {
    let mut text = problem.to_owned();
    if !raw.is_empty() {
        text = text.replace(raw, "<the URL>");
    }
    if let Some(password) = password_of(raw) {
        text = text.replace(password, "***");
    }
    text
}

/// The password in `scheme://user:password@host/…`, if there is one.
fn password_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` (`scheme://user[:old]@host…`) with `password` (percent-encoded) as its password.
pub(crate) fn with_password(url: &str, password: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| "it is not a URL of the form scheme://user@host/…".to_owned())?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end]
        .rfind('@')
        .ok_or_else(|| "it names no user: write scheme://user@host/…".to_owned())?;
    let user = rest[..at].split_once(':').map_or(&rest[..at], |(u, _)| u);
    if user.is_empty() {
        return Err("it names no user: write scheme://user@host/…".to_owned());
    }
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}{}", &rest[at..]))
}

/// One `amqp://` URL, or several separated by commas (the nodes of one cluster, tried in turn).
pub(crate) fn check_amqp_url(raw: &str) -> Result<(), String> {
    let list = crate::broker::addresses(raw);
    if list.is_empty() {
        return Err("no address; expected e.g. amqp://user:password@host:5672/%2f".to_owned());
    }
    for (i, address) in list.iter().enumerate() {
        address.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            let which = if list.len() > 1 {
                format!("address {} of {}: ", i + 1, list.len())
            } else {
                String::new()
            };
            // lapin's message repeats the address, password and all.
            let e = without_secrets(&e.to_string(), address);
            format!(
                "{which}{e}; expected e.g. amqp://user:password@host:5672/%2f (the vhost `/` is \
                 written %2f), or several such URLs separated by commas"
            )
        })?;
    }
    Ok(())
}

/// [`with_password`] for each address of an `OFFLOAD_AMQP_URL` list.
pub(crate) fn with_password_each(urls: &str, password: &str) -> Result<String, String> {
    let completed = crate::broker::addresses(urls)
        .into_iter()
        .map(|url| with_password(url, password))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(completed.join(","))
}

pub(crate) fn check_database_url(raw: &str) -> Result<(), String> {
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|scheme| raw.starts_with(scheme)) {
        Ok(())
    } else {
        Err("expected sqlite://path/to/file.db or postgres://user:password@host/db".to_owned())
    }
}

pub(crate) fn check_management_url(raw: &str) -> Result<(), String> {
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"));
    match rest {
        _ if raw.is_empty() => Ok(()),
        Some(rest) if !rest.is_empty() && !rest.contains(char::is_whitespace) => Ok(()),
        _ => Err("expected empty (off) or e.g. http://user:password@127.0.0.1:15672".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_amqp_addresses_is_checked_and_completed_address_by_address() {
        assert!(check_amqp_url("amqp://u@r1:5672/%2f,amqp://u@r2:5672/%2f").is_ok());
        let err = check_amqp_url("amqp://u@r1:5672/%2f,http://r2").expect_err("refused");
        assert!(err.starts_with("address 2 of 2: "), "{err}");
        let err = check_amqp_url("amqp://u:first@r1/%2f,amqp:u:secret@r2").expect_err("refused");
        assert!(!err.contains("secret") && !err.contains("first"), "{err}");
        assert!(check_amqp_url(" , ").is_err());
        assert_eq!(
            with_password_each("amqp://u@r1/%2f, amqp://u:old@r2/%2f", "p,w").expect("completed"),
            "amqp://u:p%2Cw@r1/%2f,amqp://u:p%2Cw@r2/%2f"
        );
    }

    #[test]
    fn the_password_is_found_and_taken_out_of_messages() {
        assert_eq!(
            password_of("postgres://u:p%40ss@h/db?sslmode=require"),
            Some("p%40ss")
        );
        assert_eq!(password_of("sqlite://data/x.db"), None);
        let raw = "amqp://u:hunter2@h:x/%2f";
        let shown = without_secrets(&format!("Invalid URL: '{raw}' (hunter2)"), raw);
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
