//! RabbitMQ users a test creates with `rabbitmqctl` (unique names, exact permissions) and
//! deletes when dropped.

/// A user on the local broker's `/` vhost, deleted on drop.
pub struct RabbitUser {
    /// The user's name.
    pub name: String,
    /// The user's password.
    pub password: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (scripts/test.sh installs RabbitMQ)");
    assert!(
        out.status.success(),
        "rabbitmqctl {}: {}",
        args.first().unwrap_or(&""),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RabbitUser {
    /// Creates `name-<random>` with `password`, the `configure`, `write` and `read` regexes on
    /// the vhost `/`, and `tags` (e.g. `management`; empty for none).
    pub fn create(name: &str, password: &str, perms: [&str; 3], tags: &[&str]) -> Self {
        let name = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        rabbitmqctl(&["add_user", &name, password]);
        let user = RabbitUser {
            name,
            password: password.to_owned(),
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            "/",
            &user.name,
            perms[0],
            perms[1],
            perms[2],
        ]);
        let mut tag_args = vec!["set_user_tags", user.name.as_str()];
        tag_args.extend_from_slice(tags);
        rabbitmqctl(&tag_args);
        user
    }

    /// `amqp://name:password@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self, port: u16) -> String {
        format!(
            "amqp://{}:{}@127.0.0.1:{port}/%2f",
            self.name, self.password
        )
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}
