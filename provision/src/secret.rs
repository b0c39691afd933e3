//! Secrets of private instances and of the URLs in the environment: random
//! passwords, files that hold them, and masking them out of every message.
//!
//! ```text
//! mask("redis://:hunter2@10.0.0.5:6379/3")        == "redis://:***@10.0.0.5:6379/3"
//! mask("host=db user=app password='s e c' dbname=x") == "host=db user=app password=*** dbname=x"
//! ```

use std::io::{self, Write};
use std::path::Path;

/// What a password is replaced with in messages.
pub(crate) const MASK: &str = "***";

/// 128 random bits from the OS, as 32 hex digits: URL-safe as it is, and
/// `CONFIG`-safe for Redis (no quotes, no spaces).
pub(crate) fn random_password() -> io::Result<String> {
    use rand_core::TryRngCore;
    let mut bytes = [0u8; 16];
    rand_core::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| io::Error::other(format!("the OS random source: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `contents` to a new file at `path`, mode 0600 from its creation
/// (never a moment world-readable, and never an existing file or a planted
/// symlink: `create_new` fails on both), owned by `owner` when given (the
/// unprivileged user a server runs as must read it).
pub(crate) fn write_private_file(
    path: &Path,
    contents: &str,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
    if let Some((uid, gid)) = owner {
        // fchown on the open file: no window in which the path could be swapped.
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

/// `text` with every password it may carry replaced by [`MASK`]: the
/// password of each `scheme://user:password@host` URL (the last `@` of
/// the authority ends it, so a password holding `@` or `/` is masked
/// whole), and the value of each `password=` (libpq's key/value form and
/// URL query parameters). Over-masking is fine; a leak is not.
pub fn mask(text: &str) -> String {
    mask_keyword(&mask_userinfo(text))
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at whitespace (the URL ends) or at the last
        // `@` before it; a `:` before that `@` starts the password.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '`' || c == '\'' || c == '"')
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) => {
                let userinfo = &url[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..=colon]);
                        out.push_str(MASK);
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_keyword(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(i) = lower[from..].find(KEY) {
        let value_start = from + i + KEY.len();
        out.push_str(&text[from..value_start]);
        out.push_str(MASK);
        let value = &text[value_start..];
        // libpq quotes a value holding spaces: 'a b', with \' inside.
        let len = if let Some(quoted) = value.strip_prefix('\'') {
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let closes = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    closes
                })
                .map_or(value.len(), |(j, _)| j + 2)
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == '&' || c == '#' || c == '`')
                .unwrap_or(value.len())
        };
        from = value_start + len;
    }
    out.push_str(&text[from..]);
    out
}
