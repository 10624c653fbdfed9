// SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause

//! Escaping text for the two markup documents the harness writes, `report.html` and the JUnit
//! XML: one escaper whose output is valid in both.

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
}
