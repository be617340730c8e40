//! Redaction of secrets in command lines.
//!
//! Command lines routinely carry secrets (`--password=…`, `--token …`, `PGPASSWORD=…`,
//! `postgres://user:pw@db/x`). The scan redacts each process's command line as soon as it is
//! collected (unless the operator opts out with `--show-secrets`), so a secret never enters the
//! report, the daemon's state, the API, Events or logs. Executables, digests and pids are
//! never touched: only [`crate::Process::cmdline`] is.
//!
//! What is redacted (each replaced by [`REDACTED`]):
//!
//! - the value of `NAME=VALUE`, `--NAME=VALUE` and `-DNAME=VALUE` when `NAME` looks like a
//!   secret (see [`is_secret_name`]); a `NAME=` found later in the same word counts too
//!   (`--set=auth.token=x`, `--opts=user=bob,password=x`), and everything after it is
//!   redacted;
//! - the word after a flag `--NAME` / `-NAME` (two characters or more) whose name looks like a
//!   secret, unless that word is itself a flag (starts with `-`); single-letter flags are never
//!   taken as secret flags (`-p` is a port for most programs, a password only for a few);
//! - the word after `Bearer` or `Basic` (as in `-H "Authorization: Bearer …"`);
//! - the userinfo of a URL: `postgres://u:pw@db/x` → `postgres://***@db/x`;
//! - the few one-letter flags that are a password for the program that reads them
//!   ([`PROGRAM_FLAGS`]): `mysql -pX` (glued only: `mysql -p db` prompts), `sshpass -p X`,
//!   `redis-cli -a X`, and the password half of `curl -u user:X`. A word naming one of those
//!   programs (its basename, quotes stripped, so `sh -c "mysql -pX"` counts) opens its
//!   context; `;`, `&&`, `||`, `|` or another such program ends it.
//!
//! Words are separated by spaces (the collected command line joins arguments with one space,
//! so a secret inside `sh -c "… --password=x …"` is found too).

use std::borrow::Cow;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "***";

/// Whole words that make a name secret (`--db-password`, `API_KEY`, `dbPassword`).
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwords",
    "passwd",
    "pwd",
    "pass",
    "passphrase",
    "secret",
    "secrets",
    "token",
    "tokens",
    "key",
    "keys",
    "apikey",
    "credential",
    "credentials",
    "creds",
    "cred",
    "auth",
    "authorization",
    "cookie",
    "privkey",
];

/// Endings that make a run-together word secret (`authtoken`, `dbpassword`, `clientsecret`).
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "secretkey",
    "privatekey",
];

/// Whether an argument or variable name looks like it names a secret.
///
/// The name is split into words at every character that is not a letter or digit and at
/// lower-to-upper case changes (`dbPassword` → `db`, `password`); it is secret when one word
/// is one of `password passwd pwd pass passphrase secret(s) token(s) key(s) apikey
/// credential(s) cred(s) auth authorization cookie privkey`, or ends with `password`,
/// `passwd`, `passphrase`, `secret`, `token`, `apikey`, `accesskey`, `secretkey` or
/// `privatekey`. So `--keyboard`, `--monkey`, `--author`, `--tokenizer` and `--bypass` are
/// not secret, while `--key-file`, `--sort-key` and `--max-keys` are (their values are
/// redacted: over-redaction of a harmless value is the cheaper mistake).
pub fn is_secret_name(name: &str) -> bool {
    words(name).any(|word| {
        SECRET_WORDS.contains(&word.as_str()) || SECRET_SUFFIXES.iter().any(|s| word.ends_with(s))
    })
}

/// The lower-cased words of a name.
fn words(name: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for ch in name.chars() {
        if !ch.is_alphanumeric() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if ch.is_uppercase() && prev_lower && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_lower = ch.is_lowercase() || ch.is_numeric();
        current.extend(ch.to_lowercase());
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter()
}

/// The command line with secrets replaced by [`REDACTED`] (see the module documentation).
/// Text without secrets comes back unchanged (borrowed, nothing allocated: most command
/// lines have none), and redacting twice changes nothing more.
pub fn redact_cmdline(cmdline: &str) -> Cow<'_, str> {
    // One pass can expose a new match to the next one only in contrived text (a URL whose
    // password contains "://"); a few passes reach the fixed point. A pass that changes
    // nothing is the fixed point.
    let Cow::Owned(mut current) = redact_once(cmdline) else {
        return Cow::Borrowed(cmdline);
    };
    for _ in 0..3 {
        match redact_once(&current) {
            Cow::Borrowed(_) => break,
            Cow::Owned(next) => current = next,
        }
    }
    Cow::Owned(current)
}

/// A text rewritten word by word: borrowed until the first word that changes, then copied
/// from there on.
struct Rewrite<'a> {
    text: &'a str,
    out: Option<String>,
    /// Where the next word starts in `text`.
    pos: usize,
}

impl<'a> Rewrite<'a> {
    fn new(text: &'a str) -> Rewrite<'a> {
        Rewrite {
            text,
            out: None,
            pos: 0,
        }
    }

    /// Word `i` of the text, `word`, is written as `new`.
    fn put(&mut self, i: usize, word: &str, new: &str) {
        match &mut self.out {
            Some(out) => {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(new);
            }
            None if new != word => {
                let mut out = String::with_capacity(self.text.len() + REDACTED.len());
                out.push_str(&self.text[..self.pos]);
                out.push_str(new);
                self.out = Some(out);
            }
            None => {}
        }
        self.pos += word.len() + 1;
    }

    /// The text, changed or not: `Owned` only when a word changed.
    fn finish(self) -> Cow<'a, str> {
        match self.out {
            Some(out) => Cow::Owned(out),
            None => Cow::Borrowed(self.text),
        }
    }
}

fn redact_once(cmdline: &str) -> Cow<'_, str> {
    let mut out = Rewrite::new(cmdline);
    let mut value_follows = false;
    // The program whose own short flags are in force, and whether the next word is the value
    // of one of them.
    let mut program: Option<&ProgramFlags> = None;
    let mut program_value_follows = false;
    for (i, word) in cmdline.split(' ').enumerate() {
        if word.is_empty() {
            out.put(i, word, word);
            continue;
        }
        if let Some(p) = program_value_follows.then_some(program).flatten() {
            program_value_follows = false;
            if !word.starts_with('-') {
                out.put(i, word, &p.redact_value(word));
                continue;
            }
        }
        if value_follows && !word.starts_with('-') {
            value_follows = false;
            out.put(i, word, &redact_value_word(word));
            continue;
        }
        if let Some(p) = ProgramFlags::named_by(word) {
            program = Some(p);
        } else if matches!(word, ";" | "&&" | "||" | "|") {
            program = None;
        } else if let Some(p) = program {
            if let Some((redacted, next)) = p.redact_flag(word) {
                program_value_follows = next;
                if word.ends_with(';') {
                    program = None;
                }
                out.put(i, word, &redacted);
                continue;
            }
        }
        if word.ends_with(';') {
            program = None;
        }
        let (redacted, takes_value) = redact_word(word);
        value_follows = takes_value;
        out.put(i, word, &redacted);
    }
    out.finish()
}

/// One-letter (and a few long) flags that carry a password for the programs named, which no
/// rule about names can know: for most programs `-p` is a port and `-a` means "all".
pub struct ProgramFlags {
    /// Basenames of the programs.
    pub programs: &'static [&'static str],
    /// The flags, as written (`-p`, `--user`).
    pub flags: &'static [&'static str],
    /// Whether the value may be the next word (`sshpass -p X`); otherwise only a glued value
    /// (`mysql -pX`) is one, because `mysql -p db` prompts for the password and `db` is not it.
    pub value_in_next_word: bool,
    /// Whether the value is `user:password` and only what follows the first ':' is secret.
    pub user_colon_password: bool,
}

/// The programs whose short flags carry a password.
pub const PROGRAM_FLAGS: &[ProgramFlags] = &[
    ProgramFlags {
        programs: &[
            "mysql",
            "mysqldump",
            "mysqladmin",
            "mysqlimport",
            "mysqlshow",
            "mysqlcheck",
            "mysqlpump",
            "mysqlbinlog",
            "mysqlslap",
            "mariadb",
            "mariadb-dump",
            "mariadb-admin",
            "mariadb-import",
            "mariadb-show",
            "mariadb-check",
            "mariadb-binlog",
            "mariadb-slap",
        ],
        flags: &["-p"],
        value_in_next_word: false,
        user_colon_password: false,
    },
    ProgramFlags {
        programs: &["sshpass"],
        flags: &["-p"],
        value_in_next_word: true,
        user_colon_password: false,
    },
    ProgramFlags {
        programs: &["redis-cli", "valkey-cli", "keydb-cli"],
        flags: &["-a"],
        value_in_next_word: true,
        user_colon_password: false,
    },
    ProgramFlags {
        programs: &["curl"],
        flags: &["-u", "--user", "-U", "--proxy-user"],
        value_in_next_word: true,
        user_colon_password: true,
    },
];

impl ProgramFlags {
    /// The entry whose program this word names, if any.
    fn named_by(word: &str) -> Option<&'static ProgramFlags> {
        let bare = word.trim_start_matches(['"', '\'', '(']);
        let base = bare.rsplit('/').next().unwrap_or(bare);
        PROGRAM_FLAGS.iter().find(|p| p.programs.contains(&base))
    }

    /// A flag word of this program: its redacted form, and whether the next word is the
    /// flag's value. `None` when the word is none of this program's secret flags.
    fn redact_flag(&self, word: &str) -> Option<(String, bool)> {
        for flag in self.flags {
            if word == *flag {
                return Some((word.to_string(), self.value_in_next_word));
            }
            let glued = if flag.starts_with("--") {
                word.strip_prefix(flag).and_then(|v| v.strip_prefix('='))
            } else if word.starts_with("--") {
                None
            } else {
                word.strip_prefix(flag)
            };
            if let Some(value) = glued.filter(|v| !v.is_empty()) {
                let head = &word[..word.len() - value.len()];
                return Some((format!("{head}{}", self.redact_value(value)), false));
            }
        }
        None
    }

    /// The value of one of this program's secret flags, redacted.
    fn redact_value(&self, value: &str) -> String {
        if !self.user_colon_password {
            return redact_value_word(value);
        }
        match value.split_once(':') {
            // `curl -u user` prompts for the password: nothing secret in the word.
            None => value.to_string(),
            Some((user, password)) => format!("{user}:{}", redact_value_word(password)),
        }
    }
}

/// A word that is the value of a secret flag: all of it, except quotes around it, so that a
/// shell-quoted value keeps its quotes (`"***"`) and the line stays readable.
fn redact_value_word(word: &str) -> String {
    if word == REDACTED {
        return word.to_string();
    }
    let lead: String = word
        .chars()
        .take_while(|c| matches!(c, '"' | '\''))
        .collect();
    let trail: String = word
        .chars()
        .rev()
        .take_while(|c| matches!(c, '"' | '\'' | ';' | ','))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if lead.len() + trail.len() >= word.len() {
        return word.to_string();
    }
    format!("{lead}{REDACTED}{trail}")
}

/// One word: its redacted form, and whether the next word is a secret flag's value.
fn redact_word(word: &str) -> (Cow<'_, str>, bool) {
    // NAME=VALUE anywhere in the word.
    for (eq, _) in word.match_indices('=') {
        let before = &word[..eq];
        let name_start = before
            .rfind(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .map_or(0, |i| {
                i + before[i..].chars().next().map_or(1, char::len_utf8)
            });
        let name = before[name_start..].trim_start_matches('-');
        if !name.is_empty() && is_secret_name(name) {
            let value = &word[eq + 1..];
            if value.is_empty() || value == REDACTED {
                return (Cow::Borrowed(word), false);
            }
            return (
                Cow::Owned(format!("{}={}", &word[..eq], redact_value_word(value))),
                false,
            );
        }
    }
    let word = redact_userinfo(word);
    let bare = word.trim_start_matches(['"', '\'']);
    let takes_value = if let Some(flag) = bare.strip_prefix('-') {
        let name = flag.trim_start_matches('-');
        !word.contains('=') && name.chars().count() >= 2 && is_secret_name(name)
    } else {
        let name = bare.trim_end_matches(':');
        name.eq_ignore_ascii_case("bearer") || name.eq_ignore_ascii_case("basic")
    };
    (word, takes_value)
}

/// Replaces the userinfo of every `scheme://userinfo@host` in a word. A URL without a ':' in
/// front of its first '/' is taken to have no userinfo unless the '@' comes before that '/'
/// (`https://host/@user` keeps its path).
fn redact_userinfo(word: &str) -> Cow<'_, str> {
    if !word.contains("://") {
        return Cow::Borrowed(word);
    }
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(pos) = rest.find("://") {
        let after = pos + 3;
        out.push_str(&rest[..after]);
        let tail = &rest[after..];
        if let Some(done) = tail.strip_prefix(REDACTED).filter(|t| t.starts_with('@')) {
            // Redacted already (redacting twice changes nothing more).
            out.push_str(REDACTED);
            rest = done;
            continue;
        }
        let mut authority_end = tail.find(['/', '?', '#']).unwrap_or(tail.len());
        let mut userinfo_end = tail[..authority_end].rfind('@');
        // An unencoded '/', '?' or '#' in a password (`u:pa/ss@host`) ends the authority too
        // early: a ':' before it and an '@' after it mean the userinfo runs to that '@'.
        if userinfo_end.is_none() && tail[..authority_end].contains(':') {
            if let Some(at) = tail.find('@') {
                userinfo_end = Some(at);
                authority_end = tail[at..]
                    .find(['/', '?', '#'])
                    .map_or(tail.len(), |i| at + i);
            }
        }
        match userinfo_end {
            Some(at) if at > 0 => {
                out.push_str(REDACTED);
                out.push_str(&tail[at..authority_end]);
            }
            _ => out.push_str(&tail[..authority_end]),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    if out == word {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_keeps_nothing_secret() {
        let line =
            "myapp --password=hunter2 --token=AKIAIOSFODNN7EXAMPLE --db=postgres://u:pw@db/x";
        assert_eq!(
            redact_cmdline(line),
            "myapp --password=*** --token=*** --db=postgres://***@db/x"
        );
    }

    #[test]
    fn flag_values_in_the_next_argument_are_redacted() {
        assert_eq!(
            redact_cmdline("app --password hunter2 --verbose"),
            "app --password *** --verbose"
        );
        assert_eq!(
            redact_cmdline("app --api-key abc --port 80"),
            "app --api-key *** --port 80"
        );
        // A boolean secret-ish flag followed by another flag takes nothing.
        assert_eq!(
            redact_cmdline("app --no-auth --port 80"),
            "app --no-auth --port 80"
        );
        // Single-letter flags are not taken as secrets: -p is a port for most programs.
        assert_eq!(redact_cmdline("nc -l -p 8080"), "nc -l -p 8080");
        // The value after a trailing flag does not exist: nothing to do, no panic.
        assert_eq!(redact_cmdline("app --token"), "app --token");
        // Double spaces are kept, and the value after them is still found.
        assert_eq!(redact_cmdline("app --token  s3cr3t"), "app --token  ***");
    }

    #[test]
    fn environment_style_and_java_properties_are_redacted() {
        for (line, want) in [
            ("env PGPASSWORD=x psql", "env PGPASSWORD=*** psql"),
            (
                "AWS_SECRET_ACCESS_KEY=abc aws s3 ls",
                "AWS_SECRET_ACCESS_KEY=*** aws s3 ls",
            ),
            ("GITHUB_TOKEN=ghp_x gh", "GITHUB_TOKEN=*** gh"),
            ("MYSQL_PWD=x mysqld", "MYSQL_PWD=*** mysqld"),
            (
                "java -Dspring.datasource.password=x -jar app.jar",
                "java -Dspring.datasource.password=*** -jar app.jar",
            ),
            ("app --dbPassword=x", "app --dbPassword=***"),
            ("app --authtoken=x", "app --authtoken=***"),
            ("app --client_secret=x", "app --client_secret=***"),
            ("helm --set=auth.token=x", "helm --set=auth.token=***"),
            (
                "app --opts=user=bob,password=x,mode=1",
                "app --opts=user=bob,password=***",
            ),
        ] {
            assert_eq!(redact_cmdline(line), want, "{line}");
        }
    }

    #[test]
    fn quoted_values_keep_their_quotes() {
        assert_eq!(
            redact_cmdline(r#"sh -c "mysql --password 'x y' db""#),
            r#"sh -c "mysql --password '*** y' db""#
        );
        assert_eq!(
            redact_cmdline(r#"curl -H "Authorization: Bearer eyJhbGci.x.y""#),
            r#"curl -H "Authorization: Bearer ***""#
        );
        assert_eq!(
            redact_cmdline("curl -H Authorization: Basic dXNlcjpwdw=="),
            "curl -H Authorization: Basic ***"
        );
    }

    #[test]
    fn passwords_in_one_letter_flags_of_the_programs_that_take_them_are_redacted() {
        for (line, want) in [
            ("mysql -uroot -pS3cr3t shop", "mysql -uroot -p*** shop"),
            (
                "/usr/bin/mysqldump -h db -pS3cr3t shop",
                "/usr/bin/mysqldump -h db -p*** shop",
            ),
            ("mariadb -pS3cr3t", "mariadb -p***"),
            // `-p` alone prompts: the next word is the database, not a password.
            ("mysql -p shop", "mysql -p shop"),
            (
                r#"sh -c "mysql -pS3cr3t shop""#,
                r#"sh -c "mysql -p*** shop""#,
            ),
            ("sshpass -p S3cr3t ssh host", "sshpass -p *** ssh host"),
            ("sshpass -pS3cr3t ssh host", "sshpass -p*** ssh host"),
            ("redis-cli -a S3cr3t ping", "redis-cli -a *** ping"),
            ("redis-cli -h r -aS3cr3t", "redis-cli -h r -a***"),
            ("curl -u bob:S3cr3t https://x", "curl -u bob:*** https://x"),
            (
                "curl --user=bob:S3cr3t https://x",
                "curl --user=bob:*** https://x",
            ),
            ("curl -ubob:S3cr3t https://x", "curl -ubob:*** https://x"),
            // curl prompts for a password it was not given.
            ("curl -u bob https://x", "curl -u bob https://x"),
            // Outside those programs, -p is a port and -a means all.
            ("nc -l -p 8080", "nc -l -p 8080"),
            ("ls -a /tmp", "ls -a /tmp"),
            ("mysql -pX; nc -p 80 h", "mysql -p***; nc -p 80 h"),
            ("mysql -pX && nc -p 80 h", "mysql -p*** && nc -p 80 h"),
            ("psql -p 5432", "psql -p 5432"),
        ] {
            assert_eq!(redact_cmdline(line), want, "{line}");
            assert_eq!(redact_cmdline(want), want, "not idempotent: {line}");
        }
    }

    #[test]
    fn url_userinfo_is_redacted_wherever_the_url_is() {
        for (line, want) in [
            ("psql postgres://u:pw@db/x", "psql postgres://***@db/x"),
            (
                "app --db=mysql://root:pw@127.0.0.1:3306",
                "app --db=mysql://***@127.0.0.1:3306",
            ),
            (
                "git clone https://tok@github.com/o/r",
                "git clone https://***@github.com/o/r",
            ),
            (
                "app a=redis://:pw@r:6379/0,b=amqp://u:p@mq/",
                "app a=redis://***@r:6379/0,b=amqp://***@mq/",
            ),
            // The path may contain an '@'; only the authority's userinfo is secret.
            ("curl https://host/@user", "curl https://host/@user"),
            ("curl https://u:p@host/a@b", "curl https://***@host/a@b"),
            ("app --db=pg://u:pa/ss?x#y@db/x", "app --db=pg://***@db/x"),
        ] {
            assert_eq!(redact_cmdline(line), want, "{line}");
        }
    }

    #[test]
    fn names_that_only_contain_a_secret_word_are_left_alone() {
        for line in [
            "xkb --keyboard=us",
            "zoo --monkey=1",
            "git log --author=alice",
            "bert --tokenizer=wordpiece",
            "proxy --bypass=local",
            "/usr/bin/passwd alice",
            "nginx: master process nginx -g daemon off;",
            "postgres: writer   ",
            "app --port=8080 --log-level debug",
            "ssh git@github.com:o/r",
            "",
            " ",
        ] {
            assert_eq!(redact_cmdline(line), line, "{line}");
        }
    }

    #[test]
    fn secret_names_follow_word_boundaries() {
        for name in [
            "password",
            "PASSWORD",
            "db-password",
            "DB_PASSWD",
            "pwd",
            "api_key",
            "apiKey",
            "apikey",
            "x-auth",
            "auth",
            "client.secret",
            "authToken",
            "oauth2-token",
            "credentials",
            "aws_secret_access_key",
            "privateKey",
            "key",
            "session-cookie",
        ] {
            assert!(is_secret_name(name), "{name} should be secret");
        }
        for name in [
            "keyboard",
            "monkey",
            "author",
            "authentication",
            "tokenizer",
            "bypass",
            "port",
            "passive",
            "compass",
            "hotkeys",
            "turkey",
            "",
            "-",
            "secretary",
        ] {
            assert!(!is_secret_name(name), "{name} should not be secret");
        }
    }

    /// A small deterministic generator: the property tests need no extra crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[(self.next() % items.len() as u64) as usize]
        }
        fn secret(&mut self) -> String {
            let alphabet =
                b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/_.~!$%";
            let len = 6 + (self.next() % 20) as usize;
            let body: String = (0..len)
                .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
                .collect();
            format!("Q9{body}")
        }
        fn text(&mut self, max: usize) -> String {
            let pieces = [
                " ", "-", "--", "=", "@", "://", "/", ":", "\"", "'", "a", "Z", "token", "key",
                "é", "\u{202e}", "\\x00", "bearer", "***", ",", "?", "#",
            ];
            let n = (self.next() % max as u64) as usize;
            (0..n).map(|_| self.pick(&pieces)).collect()
        }
    }

    const NOISE: &[&str] = &[
        "--verbose",
        "-v",
        "--port=8080",
        "run",
        "/bin/app",
        "--log-level",
        "debug",
        "-p",
        "80",
        "--keyboard=us",
        "x=y",
        "--config",
        "/etc/app.yaml",
    ];

    #[test]
    fn property_planted_secrets_never_survive() {
        let forms: &[&str] = &[
            "--{name}={secret}",
            "--{name} {secret}",
            "-{name} {secret}",
            "{NAME}={secret}",
            "-Dapp.{name}={secret}",
            "--url=https://user:{secret}@host:443/path",
            "postgres://app:{secret}@db/x",
            "\"Authorization: Bearer {secret}\"",
            "--opts=a=b,{name}={secret}",
            "mysql -u{name} -p{secret}",
            "sshpass -p {secret}",
            "redis-cli -a {secret}",
            "curl -u {name}:{secret}",
        ];
        let names: &[&str] = &[
            "password",
            "db-password",
            "api_key",
            "apiKey",
            "token",
            "auth",
            "secret",
            "credentials",
            "passwd",
            "pwd",
            "client-secret",
            "access.token",
            "privkey",
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..5000 {
            let secret = rng.secret();
            let name = rng.pick(names);
            let planted = rng
                .pick(forms)
                .replace("{name}", name)
                .replace("{NAME}", &name.to_uppercase().replace(['-', '.'], "_"))
                .replace("{secret}", &secret);
            let mut words: Vec<String> = (0..(rng.next() % 6))
                .map(|_| rng.pick(NOISE).to_string())
                .collect();
            let at = (rng.next() % (words.len() as u64 + 1)) as usize;
            words.insert(at, planted);
            if rng.next().is_multiple_of(2) {
                words.push(rng.pick(NOISE).to_string());
            }
            let line = words.join(" ");
            let redacted = redact_cmdline(&line);
            assert!(
                !redacted.contains(&secret),
                "secret survived:\n  line:     {line}\n  redacted: {redacted}"
            );
            assert_eq!(
                redact_cmdline(&redacted),
                redacted,
                "not idempotent: {line}"
            );
        }
    }

    #[test]
    fn property_arbitrary_text_never_panics_and_redaction_is_stable() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let line = rng.text(40);
            let once = redact_cmdline(&line);
            assert_eq!(redact_cmdline(&once), once, "not idempotent: {line:?}");
            // Redaction only ever replaces text by "***": it never adds words.
            assert_eq!(
                once.split(' ').count(),
                line.split(' ').count(),
                "{line:?} -> {once:?}"
            );
        }
    }

    #[test]
    fn property_lines_without_secret_material_are_unchanged() {
        let mut rng = Rng(0xdead_beef_cafe_f00d);
        for _ in 0..5000 {
            let n = 1 + rng.next() % 8;
            let line: Vec<&str> = (0..n).map(|_| rng.pick(NOISE)).collect();
            let line = line.join(" ");
            assert_eq!(redact_cmdline(&line), line);
        }
    }
}
