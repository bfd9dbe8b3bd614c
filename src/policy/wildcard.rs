//! IAM's wildcards: `*` matches any run of characters (none included), `?`
//! exactly one. A pattern is a list of [`Tok`]ens rather than text, so that
//! a `*` or `?` a policy variable put there (`${*}`, `${?}`, a variable's
//! value) stands for itself.

use super::variable::{Template, Who};

/// One element of a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    Byte(u8),
    /// `*`: any run of bytes.
    Star,
    /// `?`: exactly one byte.
    One,
}

/// The tokens of policy text: `*` and `?` are wildcards.
pub fn tokens(text: &str) -> impl Iterator<Item = Tok> + '_ {
    text.bytes().map(|b| match b {
        b'*' => Tok::Star,
        b'?' => Tok::One,
        b => Tok::Byte(b),
    })
}

#[derive(Debug, Clone)]
pub struct Pattern {
    template: Template,
    /// Compared without regard to ASCII case (actions); the template's
    /// text is then lowercase.
    fold_case: bool,
}

impl Pattern {
    /// A pattern with no variables.
    pub fn new(text: &str, fold_case: bool) -> Pattern {
        let text = if fold_case {
            text.to_ascii_lowercase()
        } else {
            text.to_owned()
        };
        Pattern {
            template: Template::plain(&text),
            fold_case,
        }
    }

    /// A case-sensitive pattern whose variables are substituted per request.
    pub fn of(template: Template) -> Pattern {
        Pattern {
            template,
            fold_case: false,
        }
    }

    pub fn matches(&self, value: &str, who: &Who) -> bool {
        let toks = self.template.tokens(Some(who));
        glob_tokens(&toks, value.as_bytes(), self.fold_case)
    }
}

/// Wildcard match without backtracking blow-up: on a mismatch, retry from
/// just after the last `*`, which is enough since `*` matches any run.
/// With `fold_case`, pattern bytes are lowercase and value bytes are
/// lowered before comparing.
pub fn glob_tokens(pattern: &[Tok], value: &[u8], fold_case: bool) -> bool {
    let same = |a: u8, b: u8| {
        if fold_case {
            a == b.to_ascii_lowercase()
        } else {
            a == b
        }
    };
    let (mut p, mut v) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(Tok::Star) => {
                star = Some((p, v));
                p += 1;
            }
            Some(Tok::One) => {
                p += 1;
                v += 1;
            }
            Some(&Tok::Byte(c)) if same(c, value[v]) => {
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
    pattern[p..].iter().all(|&t| t == Tok::Star)
}

/// A token of a resource shape: a byte, or a run of bytes without `:`
/// (a region, an account, a key id or an alias name never holds one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Byte(u8),
    Segment,
}

/// The shape of `text`: each `*` stands for one colon-free segment.
pub fn shape(text: &str) -> Vec<Shape> {
    text.bytes()
        .map(|b| match b {
            b'*' => Shape::Segment,
            b => Shape::Byte(b),
        })
        .collect()
}

/// Whether some string matches both the pattern and the shape: how the
/// grammar tells which kinds of resource (keys, aliases) a `Resource`
/// pattern can name.
pub fn intersects(pattern: &[Tok], shape: &[Shape]) -> bool {
    // reach[i][j]: the first i tokens of the pattern and the first j of
    // the shape can match one same string.
    let (n, m) = (pattern.len(), shape.len());
    let mut reach = vec![vec![false; m + 1]; n + 1];
    reach[0][0] = true;
    for i in 0..=n {
        for j in 0..=m {
            if !reach[i][j] {
                continue;
            }
            let (p, s) = (pattern.get(i), shape.get(j));
            if p == Some(&Tok::Star) {
                // The star matches nothing, or takes in the shape's next
                // token (whatever that token matches).
                reach[i + 1][j] = true;
                if s.is_some() {
                    reach[i][j + 1] = true;
                }
            }
            if s == Some(&Shape::Segment) {
                // The segment matches nothing, or takes in the pattern's
                // next token where it can be other than a colon.
                reach[i][j + 1] = true;
                if matches!(p, Some(Tok::Star | Tok::One))
                    || matches!(p, Some(&Tok::Byte(c)) if c != b':')
                {
                    reach[i + 1][j] = true;
                }
            }
            match (p, s) {
                (Some(Tok::Byte(x)), Some(Shape::Byte(y))) if x == y => reach[i + 1][j + 1] = true,
                (Some(Tok::One), Some(Shape::Byte(_))) => reach[i + 1][j + 1] = true,
                _ => {}
            }
        }
    }
    reach[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_and_question_marks() {
        let m = |p: &str, v: &str| glob_tokens(&tokens(p).collect::<Vec<_>>(), v.as_bytes(), false);
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
        let who = Who {
            arn: "arn:aws:iam::111122223333:user/app",
            account: "111122223333",
        };
        assert!(Pattern::new("kms:Decrypt", true).matches("KMS:DECRYPT", &who));
        assert!(!Pattern::new("Prod", false).matches("prod", &who));
    }

    #[test]
    fn intersections() {
        let t = |s: &str| tokens(s).collect::<Vec<_>>();
        let key = shape("arn:aws:kms:*:*:key/*");
        let alias = shape("arn:aws:kms:*:*:alias/*");
        for (p, k, a) in [
            ("*", true, true),
            ("arn:aws:kms:*", true, true),
            ("arn:aws:kms:us-east-1:111122223333:key/*", true, false),
            ("arn:aws:kms:*:111122223333:alias/prod-*", false, true),
            ("arn:aws:kms:us-east-1:111122223333:alias/*", false, true),
            ("arn:aws:kms:*:alias/x", false, true),
            ("arn:aws:kms:*:*:key/*:x", false, false),
            ("arn:aws:kms:us-east-1:111122223333:k*", true, false),
            ("arn:aws:kms:us-east-1:111122223333:???/*", true, false),
            ("arn:aws:kms:us-east-1:111122223333:*/*", true, true),
            ("arn:aws:kms:us-east-1:111122223333:grant/*", false, false),
            ("arn:aws:s3:::bucket", false, false),
            ("arn:aws:kms:us-east-1:111122223333:key", false, false),
        ] {
            assert_eq!(intersects(&t(p), &key), k, "{p} and keys");
            assert_eq!(intersects(&t(p), &alias), a, "{p} and aliases");
        }
    }
}
