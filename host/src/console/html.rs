//! HTML building for the console: [`esc`] for every value that is not a
//! literal of this crate, and the page frame (navigation, notices) every
//! page shares. No value reaches a page without going through [`esc`].

use std::fmt::Write as _;

/// Escapes text for an HTML text node or a double- or single-quoted
/// attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes text for a query-string value.
pub fn query_value(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Which navigation entry is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// The sign-in page (no navigation).
    SignIn,
    /// Users (superusers).
    Users,
    /// The caller's own account.
    Account,
    /// Plugins (superusers).
    Plugins,
    /// The audit trail (superusers).
    Audit,
}

/// Who is signed in, as the frame shows it.
pub struct Viewer<'a> {
    /// Their username.
    pub username: &'a str,
    /// Whether the admin sections are listed.
    pub is_superuser: bool,
    /// The CSRF token for the sign-out form.
    pub csrf: &'a str,
}

/// A message shown above the content.
pub enum Notice {
    /// Something worked.
    Done(String),
    /// Something was refused; the text says why.
    Error(String),
}

/// A whole page: head (styles and script from `/admin/assets/`), navigation
/// for `viewer`, notices, then `body` (already escaped HTML).
pub fn page(
    title: &str,
    section: Section,
    viewer: Option<&Viewer<'_>>,
    notices: &[Notice],
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · agentflow</title>\
         <link rel=\"stylesheet\" href=\"/admin/assets/console.css\">\
         <script src=\"/admin/assets/console.js\" defer></script></head><body>",
        esc(title)
    );
    out.push_str("<header><span class=\"brand\">agentflow</span>");
    if let Some(v) = viewer {
        out.push_str("<nav>");
        let mut link = |s: Section, href: &str, label: &str| {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        };
        if v.is_superuser {
            link(Section::Users, "/admin/users", "Users");
        }
        link(Section::Account, "/admin/account", "My account");
        if v.is_superuser {
            link(Section::Plugins, "/admin/plugins", "Plugins");
            link(Section::Audit, "/admin/audit", "Audit");
        }
        let _ = write!(
            out,
            "</nav><form method=\"post\" action=\"/admin/logout\" class=\"signout\">\
             <span class=\"who\">{}</span>{}<button type=\"submit\">Sign out</button></form>",
            esc(v.username),
            csrf_field(v.csrf)
        );
    }
    out.push_str("</header><main>");
    let _ = write!(out, "<h1>{}</h1>", esc(title));
    for n in notices {
        match n {
            Notice::Done(t) => {
                let _ = write!(
                    out,
                    "<p class=\"notice done\" role=\"status\">{}</p>",
                    esc(t)
                );
            }
            Notice::Error(t) => {
                let _ = write!(
                    out,
                    "<p class=\"notice error\" role=\"alert\">{}</p>",
                    esc(t)
                );
            }
        }
    }
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

/// The hidden CSRF field every console form carries.
pub fn csrf_field(token: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(token)
    )
}

/// A unix time as `YYYY-MM-DD HH:MM:SS UTC` (empty for none).
pub fn time(secs: Option<u64>) -> String {
    match secs {
        Some(s) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            let text = humantime::format_rfc3339_seconds(t).to_string();
            text.replace('T', " ").replace('Z', " UTC")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_both_quotes() {
        assert_eq!(
            esc(r#"<script>alert("x")</script>' onmouseover='1 &"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&#39; onmouseover=&#39;1 &amp;"
        );
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
    }

    #[test]
    fn titles_and_names_in_the_frame_are_escaped() {
        let v = Viewer {
            username: "<b>x</b>",
            is_superuser: false,
            csrf: "\"tok",
        };
        let html = page(
            "<t>",
            Section::Account,
            Some(&v),
            &[Notice::Error("<e>".into())],
            "",
        );
        assert!(!html.contains("<b>x</b>") && !html.contains("<t>") && !html.contains("<e>"));
        assert!(html.contains("&quot;tok"));
        assert!(
            !html.contains("/admin/users"),
            "no admin links for a non-superuser"
        );
    }
}
