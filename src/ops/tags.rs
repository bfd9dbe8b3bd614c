//! Tags as AWS checks them, for CreateKey, TagResource and UntagResource.

use super::shapes::TagShape;
use super::validate::Violations;
use crate::error::KmsError;
use crate::keystore::Tag;

/// Tags one key may have, and one request may carry.
pub const MAX_TAGS: usize = 50;

/// Tag keys beginning with `aws:` belong to AWS. The prefix is compared
/// without regard to case: AWS refuses `AWS:key1` as well (LocalStack's
/// test of CreateKey, validated against AWS, expects that).
pub fn is_reserved_tag_key(key: &str) -> bool {
    key.get(..4)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("aws:"))
}

/// The model's length limits on a `Tags` member, with AWS's 1-based
/// member paths (`tags.1.member.tagKey`).
pub fn check_tag_lengths(v: &mut Violations, tags: &[TagShape]) {
    for (i, t) in tags.iter().enumerate() {
        v.str_len(&format!("tags.{}.member.tagKey", i + 1), &t.tag_key, 1, 128);
        v.str_len(
            &format!("tags.{}.member.tagValue", i + 1),
            &t.tag_value,
            0,
            256,
        );
    }
}

/// What AWS checks of tags beyond the model, each a TagException: at most
/// [`MAX_TAGS`] in one request, no reserved key, no key twice.
pub fn check_tag_rules(tags: &[TagShape]) -> Result<Vec<Tag>, KmsError> {
    if tags.len() > MAX_TAGS {
        return Err(KmsError::Tag("Too many tags".into()));
    }
    let mut out: Vec<Tag> = Vec::with_capacity(tags.len());
    for t in tags {
        if is_reserved_tag_key(&t.tag_key) {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved".into(),
            ));
        }
        if out.iter().any(|o| o.key == t.tag_key) {
            return Err(KmsError::Tag("Duplicate tag keys".into()));
        }
        out.push(Tag {
            key: t.tag_key.clone(),
            value: t.tag_value.clone(),
        });
    }
    Ok(out)
}

/// Validates tags as AWS does: lengths as ValidationException, the rest
/// (count, duplicates, the reserved `aws:` prefix) as TagException.
pub fn check_tags(tags: &[TagShape]) -> Result<Vec<Tag>, KmsError> {
    let mut v = Violations::new();
    check_tag_lengths(&mut v, tags);
    v.finish()?;
    check_tag_rules(tags)
}
