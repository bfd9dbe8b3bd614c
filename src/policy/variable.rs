//! IAM's policy variables: `${aws:username}` in a `Resource` or a string
//! condition value stands for the caller's user name, substituted per
//! request. IAM substitutes them only under `"Version": "2012-10-17"`;
//! under `2008-10-17`, or with no Version, `${...}` is literal text.
//!
//! kmsgate substitutes the variables whose value it knows for every
//! request: `${aws:username}`, `${aws:PrincipalArn}` and
//! `${aws:PrincipalAccount}` (names compared without regard to case), and
//! the special `${*}`, `${?}` and `${$}` (a literal `*`, `?` and `$`). A
//! policy that uses any other variable, or a default value
//! (`${aws:username, 'x'}`), is refused: a variable that is never
//! substituted would compare as text and never match, and a Deny written
//! with it would never apply.

use std::borrow::Cow;

use super::document::PolicyError;
use super::wildcard::{Tok, tokens};

/// A variable kmsgate substitutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variable {
    Username,
    PrincipalArn,
    PrincipalAccount,
}

/// Who is asking: what the variables stand for.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    /// `arn:{partition}:iam::{account}:user/{name}`.
    pub arn: &'a str,
    pub account: &'a str,
}

impl Who<'_> {
    fn value(&self, v: Variable) -> &str {
        match v {
            Variable::PrincipalArn => self.arn,
            Variable::PrincipalAccount => self.account,
            Variable::Username => {
                let name = self.arn.rsplit_once(":user/").map_or(self.arn, |(_, n)| n);
                name.rsplit('/').next().unwrap_or(name)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Policy text: in a pattern, its `*` and `?` are wildcards.
    Text(String),
    /// What `${*}`, `${?}` or `${$}` stands for: always itself.
    Literal(char),
    Var(Variable),
}

/// A policy string with its variables found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Text with no variables.
    pub fn plain(text: &str) -> Template {
        Template {
            pieces: vec![Piece::Text(text.to_owned())],
        }
    }

    /// Finds the variables of `text` when `substitute` (Version
    /// 2012-10-17), else takes it as it is.
    pub fn parse(text: &str, substitute: bool) -> Result<Template, PolicyError> {
        if !substitute {
            return Ok(Template::plain(text));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(PolicyError(format!(
                    "Policy contains an unterminated policy variable in: {text}."
                )));
            };
            let name = &after[..end];
            pieces.push(match name.to_ascii_lowercase().as_str() {
                "*" => Piece::Literal('*'),
                "?" => Piece::Literal('?'),
                "$" => Piece::Literal('$'),
                "aws:username" => Piece::Var(Variable::Username),
                "aws:principalarn" => Piece::Var(Variable::PrincipalArn),
                "aws:principalaccount" => Piece::Var(Variable::PrincipalAccount),
                _ => {
                    return Err(PolicyError(format!(
                        "Policy contains an unsupported policy variable: ${{{name}}}. kmsgate substitutes ${{aws:username}}, ${{aws:PrincipalArn}}, ${{aws:PrincipalAccount}}, ${{*}}, ${{?}} and ${{$}}."
                    )));
                }
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(Template { pieces })
    }

    /// The text with the variables' values (for equality).
    pub fn expand(&self, who: &Who) -> Cow<'_, str> {
        if let [Piece::Text(t)] = self.pieces.as_slice() {
            return Cow::Borrowed(t);
        }
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Literal(c) => out.push(*c),
                Piece::Var(v) => out.push_str(who.value(*v)),
            }
        }
        Cow::Owned(out)
    }

    /// The pattern it stands for: wildcards only from the policy's own
    /// text. With no `who` (at parse time), a variable is taken to match
    /// anything.
    pub fn tokens(&self, who: Option<&Who>) -> Vec<Tok> {
        let mut out = Vec::new();
        for p in &self.pieces {
            match (p, who) {
                (Piece::Text(t), _) => out.extend(tokens(t)),
                (Piece::Literal(c), _) => out.push(Tok::Byte(*c as u8)),
                (Piece::Var(v), Some(who)) => out.extend(who.value(*v).bytes().map(Tok::Byte)),
                (Piece::Var(_), None) => out.push(Tok::Star),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::wildcard::glob_tokens;
    use super::*;

    const WHO: Who = Who {
        arn: "arn:aws:iam::111122223333:user/app",
        account: "111122223333",
    };

    #[test]
    fn known_variables_are_substituted() {
        let t = Template::parse(
            "${aws:PrincipalAccount}/${AWS:USERNAME}/${aws:principalarn}",
            true,
        )
        .unwrap();
        assert_eq!(
            t.expand(&WHO),
            "111122223333/app/arn:aws:iam::111122223333:user/app"
        );
    }

    #[test]
    fn special_characters_stand_for_themselves() {
        let t = Template::parse("a${*}b${?}${$}*", true).unwrap();
        assert_eq!(t.expand(&WHO), "a*b?$*");
        let toks = t.tokens(Some(&WHO));
        assert!(glob_tokens(&toks, b"a*b?$anything", false));
        assert!(!glob_tokens(&toks, b"axb?$", false));
        assert!(!glob_tokens(&toks, b"a*bx$", false));
    }

    #[test]
    fn unknown_variables_and_defaults_are_refused() {
        for text in [
            "${aws:userid}",
            "${aws:SourceIp}",
            "${aws:username, 'x'}",
            "${kms:CallerAccount}",
            "x${aws:username",
        ] {
            assert!(Template::parse(text, true).is_err(), "{text}");
            // Under the old grammar it is text.
            assert_eq!(
                Template::parse(text, false).unwrap().expand(&WHO),
                text,
                "{text}"
            );
        }
        let e = Template::parse("${aws:userid}", true).unwrap_err();
        assert!(
            e.0.contains("unsupported policy variable: ${aws:userid}"),
            "{e}"
        );
    }
}
