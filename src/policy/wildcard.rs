//! IAM's wildcards: `*` matches any run of characters (none included), `?`
//! exactly one.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// Compared without regard to ASCII case (actions); `text` is then
    /// lowercase.
    fold_case: bool,
}

impl Pattern {
    pub fn new(text: &str, fold_case: bool) -> Pattern {
        let text = if fold_case {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        Pattern { text, fold_case }
    }

    pub fn matches(&self, value: &str) -> bool {
        let (p, v) = (self.text.as_bytes(), value.as_bytes());
        if self.fold_case {
            glob_by(p, v, |a, b| a == b.to_ascii_lowercase())
        } else {
            glob_by(p, v, |a, b| a == b)
        }
    }
}

/// Wildcard match without backtracking blow-up: on a mismatch, retry from
/// just after the last `*`, which is enough since `*` matches any run.
pub fn glob(pattern: &[u8], value: &[u8]) -> bool {
    glob_by(pattern, value, |a, b| a == b)
}

/// [`glob`] with `same(pattern byte, value byte)` deciding a literal match.
fn glob_by(pattern: &[u8], value: &[u8], same: impl Fn(u8, u8) -> bool) -> bool {
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(&c) if c == b'?' || same(c, value[v]) => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        let m = |p: &str, v: &str| glob(p.as_bytes(), v.as_bytes());
        assert!(m("kms:*", "kms:decrypt"));
        assert!(m("kms:generatedatakey*", "kms:generatedatakey"));
        assert!(m(
            "kms:generatedatakey*",
            "kms:generatedatakeywithoutplaintext"
        ));
        assert!(!m("kms:generatedatakey*", "kms:decrypt"));
        assert!(m("*", ""));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*x*y*", "aaxbbyc"));
        assert!(!m("*x*y", "aaxbbyc"));
        assert!(m(
            "arn:aws:kms:*:111122223333:key/*",
            "arn:aws:kms:us-east-1:111122223333:key/abc"
        ));
        assert!(!m(
            "arn:aws:kms:*:111122223333:key/*",
            "arn:aws:kms:us-east-1:444455556666:key/abc"
        ));
    }

    #[test]
    fn case_folding_is_per_pattern() {
        assert!(Pattern::new("kms:Decrypt", true).matches("KMS:DECRYPT"));
        assert!(!Pattern::new("Prod", false).matches("prod"));
    }
}
