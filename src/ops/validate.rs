//! AWS's validation messages, collected the way AWS reports them.
//!
//! AWS checks every member against the model's constraints and answers with
//! all violations at once:
//! `1 validation error detected: Value '0' at 'numberOfBytes' failed to
//! satisfy constraint: Member must have value greater than or equal to 1`,
//! or `2 validation errors detected: ...; ...`. Member paths are the
//! lowerCamelCase member names; sensitive and blob members show no value.

use crate::error::KmsError;

#[derive(Default)]
pub struct Violations(Vec<String>);

impl Violations {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, value: Option<&str>, member: &str, constraint: String) {
        let v = match value {
            Some(v) => format!("Value '{v}' at '{member}'"),
            None => format!("Value at '{member}'"),
        };
        self.0
            .push(format!("{v} failed to satisfy constraint: {constraint}"));
    }

    /// A required member; answers whether it is present.
    pub fn required<T>(&mut self, member: &str, v: &Option<T>) -> bool {
        if v.is_none() {
            self.0.push(format!(
                "Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ));
            return false;
        }
        true
    }

    /// String length in characters, as AWS counts it.
    pub fn str_len(&mut self, member: &str, s: &str, min: usize, max: usize) {
        let n = s.chars().count();
        if n < min {
            self.push(
                Some(s),
                member,
                format!("Member must have length greater than or equal to {min}"),
            );
        } else if n > max {
            self.push(
                Some(s),
                member,
                format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    /// Blob length in bytes; the value is never quoted.
    pub fn blob_len(&mut self, member: &str, len: usize, min: usize, max: usize) {
        if len < min {
            self.push(
                None,
                member,
                format!("Member must have length greater than or equal to {min}"),
            );
        } else if len > max {
            self.push(
                None,
                member,
                format!("Member must have length less than or equal to {max}"),
            );
        }
    }

    /// List length; like a blob's, reported without a value.
    pub fn list_len(&mut self, member: &str, len: usize, min: usize, max: usize) {
        self.blob_len(member, len, min, max);
    }

    pub fn int_range(&mut self, member: &str, v: i64, min: i64, max: i64) {
        if v < min {
            self.push(
                Some(&v.to_string()),
                member,
                format!("Member must have value greater than or equal to {min}"),
            );
        } else if v > max {
            self.push(
                Some(&v.to_string()),
                member,
                format!("Member must have value less than or equal to {max}"),
            );
        }
    }

    /// Answers whether `v` is one of `allowed`.
    pub fn enum_value(&mut self, member: &str, v: &str, allowed: &[&str]) -> bool {
        if allowed.contains(&v) {
            return true;
        }
        self.push(
            Some(v),
            member,
            format!(
                "Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            ),
        );
        false
    }

    pub fn pattern(&mut self, member: &str, v: &str, ok: bool, pattern: &str) {
        if !ok {
            self.push(
                Some(v),
                member,
                format!("Member must satisfy regular expression pattern: {pattern}"),
            );
        }
    }

    /// Grant tokens: at most 10, each 1 to 8192 characters.
    pub fn grant_tokens(&mut self, tokens: &Option<Vec<String>>) {
        if let Some(tokens) = tokens {
            self.list_len("grantTokens", tokens.len(), 0, 10);
            for t in tokens {
                self.str_len("grantTokens.member", t, 1, 8192);
            }
        }
    }

    pub fn finish(self) -> Result<(), KmsError> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(KmsError::Validation(format!(
                "1 validation error detected: {}",
                self.0[0]
            ))),
            n => Err(KmsError::Validation(format!(
                "{n} validation errors detected: {}",
                self.0.join("; ")
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_violation_uses_aws_text() {
        let mut v = Violations::new();
        v.int_range("numberOfBytes", 0, 1, 1024);
        assert_eq!(
            v.finish().unwrap_err().message().unwrap(),
            "1 validation error detected: Value '0' at 'numberOfBytes' failed to satisfy constraint: Member must have value greater than or equal to 1"
        );
    }

    #[test]
    fn sensitive_blob_shows_no_value() {
        let mut v = Violations::new();
        v.blob_len("plaintext", 4097, 1, 4096);
        assert_eq!(
            v.finish().unwrap_err().message().unwrap(),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
        );
    }

    #[test]
    fn several_violations_are_joined() {
        let mut v = Violations::new();
        v.int_range("numberOfBytes", 1025, 1, 1024);
        v.enum_value("keySpec", "AES_512", &["AES_256", "AES_128"]);
        let m = v.finish().unwrap_err().message().unwrap();
        assert!(
            m.starts_with("2 validation errors detected: Value '1025'"),
            "{m}"
        );
        assert!(m.contains("; Value 'AES_512' at 'keySpec' failed to satisfy constraint: Member must satisfy enum value set: [AES_256, AES_128]"), "{m}");
    }
}
