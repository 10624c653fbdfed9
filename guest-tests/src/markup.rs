// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Escaping text for the two markup documents the harness writes, `report.html` and the JUnit
//! XML: one escaper whose output is valid in both; and a file name made into a URL path, for
//! the links of `report.html` and the log URLs of the KCIDB document.

use std::fmt::Write as _;

/// Escapes text for element content and attribute values of HTML and of XML 1.0. Control
/// characters other than tab, line feed and carriage return (which XML 1.0 cannot hold and
/// HTML calls a parse error, and which a console carries now and then) become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' | '\r' => out.push(c),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a relative file path for a URL: every byte but unreserved ASCII
/// (RFC 3986: letters, digits, `-._~`) and `/` becomes `%XX`, so that a name with spaces, `#`,
/// `?`, `%`, `+` or non-ASCII letters stays one valid path.
pub fn url_path(file: &str) -> String {
    let mut out = String::with_capacity(file.len());
    for b in file.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_and_controls_are_escaped() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            escape("bell\u{7} esc\u{1b} del\u{7f}"),
            "bell\u{fffd} esc\u{fffd} del\u{fffd}"
        );
        assert_eq!(escape("a\tb\r\nc é"), "a\tb\r\nc é");
    }

    #[test]
    fn url_paths_keep_unreserved_bytes_and_slashes() {
        assert_eq!(url_path("a b#c?.log"), "a%20b%23c%3F.log");
        assert_eq!(url_path("d/6.1-kref--x_y~z.log"), "d/6.1-kref--x_y~z.log");
        assert_eq!(url_path("100%+é"), "100%25%2B%C3%A9");
    }
}
