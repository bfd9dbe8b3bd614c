//! A refused SigV4 signature as AWS's front end words it: the exception and
//! text for each [`SignatureError`]. A part of `error` of its own only for
//! length; where AWS's own text for a case could not be found, the text is
//! written in its style and the arm says so.

use super::{INTERNAL_FAILURE, KmsError};
use crate::auth::sigv4::{ScopeMismatch, SignatureError, UnsignedHeader};

/// AWS's text for a signature that does not match.
pub const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the \
     signature you provided. Check your AWS Secret Access Key and signing method. Consult the \
     service documentation for details.";

impl From<SignatureError> for KmsError {
    fn from(e: SignatureError) -> Self {
        use SignatureError as E;
        match e {
            E::Missing => {
                KmsError::MissingAuthenticationToken("Missing Authentication Token".into())
            }
            E::HeaderAndQuery => KmsError::InvalidSignature(
                "Found both 'X-Amz-Algorithm' as a query-string param and 'Authorization' as HTTP \
                 header."
                    .into(),
            ),
            // kmsgate's own: AWS accepts the presigned form everywhere.
            E::QueryAuthDisabled => KmsError::IncompleteSignature(
                "AWS query-string authentication ('X-Amz-Algorithm' in the query string) is not \
                 allowed on this endpoint. Sign the request in the 'Authorization' header."
                    .into(),
            ),
            E::NotKeyValue {
                part,
                authorization,
            } => KmsError::IncompleteSignature(format!(
                "'{part}' not a valid key=value pair (missing equal-sign) in Authorization header: \
                 '{authorization}'."
            )),
            E::MissingHeaderParams {
                credential,
                signed_headers,
                signature,
                date,
                authorization,
            } => {
                let mut msg = String::new();
                for (missing, text) in [
                    (
                        credential,
                        "Authorization header requires 'Credential' parameter. ",
                    ),
                    (
                        signed_headers,
                        "Authorization header requires 'SignedHeaders' parameter. ",
                    ),
                    (
                        signature,
                        "Authorization header requires 'Signature' parameter. ",
                    ),
                    (
                        date,
                        "Authorization header requires existence of either a 'X-Amz-Date' or a \
                         'Date' header. ",
                    ),
                ] {
                    if missing {
                        msg.push_str(text);
                    }
                }
                KmsError::IncompleteSignature(format!("{msg}Authorization={authorization}"))
            }
            E::MissingQueryParams(names) => {
                let mut msg = String::new();
                for name in names {
                    msg.push_str(&format!(
                        "AWS query-string parameters must include '{name}'. "
                    ));
                }
                KmsError::IncompleteSignature(format!(
                    "{msg}Re-examine the query-string parameters."
                ))
            }
            E::ExpiresTooLong { max_secs } => KmsError::IncompleteSignature(format!(
                "X-Amz-Expires must be less than a week (in seconds) that is {max_secs}"
            )),
            E::ExpiresNotNumber => {
                KmsError::IncompleteSignature("X-Amz-Expires should be a number".into())
            }
            E::MalformedDate(date) => KmsError::IncompleteSignature(format!(
                "Date must be in ISO-8601 'basic format'. Got '{date}'. See \
                 http://en.wikipedia.org/wiki/ISO_8601"
            )),
            E::Expired {
                request,
                earliest,
                now,
                window_secs,
            } => KmsError::InvalidSignature(format!(
                "Signature expired: {request} is now earlier than {earliest} ({now} - {}.)",
                window_text(window_secs)
            )),
            E::NotYetCurrent {
                request,
                latest,
                now,
                window_secs,
            } => KmsError::InvalidSignature(format!(
                "Signature not yet current: {request} is still later than {latest} ({now} + {}.)",
                window_text(window_secs)
            )),
            E::Unsigned(header) => {
                let name = match &header {
                    UnsignedHeader::Host => "'Host' or ':authority'".to_owned(),
                    UnsignedHeader::AmzDate => "'X-Amz-Date'".to_owned(),
                    // AWS's own wording for an unsigned x-amz-* header was
                    // not found, so it follows the pattern of the two above
                    // with the header's name.
                    UnsignedHeader::Amz(name) => format!("'{name}'"),
                };
                KmsError::InvalidSignature(format!(
                    "{name} must be a 'SignedHeader' in the AWS Authorization."
                ))
            }
            E::SignedHeaderAbsent(name) => KmsError::IncompleteSignature(format!(
                "'{name}' is named as a SignedHeader, but it does not exist in the HTTP request."
            )),
            E::UnsupportedAlgorithm(algorithm) => KmsError::IncompleteSignature(format!(
                "Unsupported AWS 'algorithm': '{algorithm}' (only AWS4-HMAC-SHA256 for now). "
            )),
            E::MalformedCredential(credential) => KmsError::IncompleteSignature(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. \
                 keyid/date/region/service/term, got '{credential}'"
            )),
            E::Scope(mismatch) => KmsError::InvalidSignature(scope_text(&mismatch)),
            E::UnknownAccessKey | E::SessionToken => KmsError::UnrecognizedClient,
            // kmsgate's own: AWS KMS hashes the body whatever the header
            // says, so such a request fails there as a signature mismatch.
            E::UnsignedPayload(value) => KmsError::InvalidSignature(format!(
                "'x-amz-content-sha256' must be the SHA-256 of the request payload; '{value}' is \
                 not supported by this service."
            )),
            // S3's text for the same case.
            E::ContentSha256Mismatch => KmsError::InvalidSignature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ),
            E::Mismatch => KmsError::InvalidSignature(SIGNATURE_MISMATCH.into()),
            E::Internal => KmsError::Internal(INTERNAL_FAILURE.into()),
        }
    }
}

/// AWS reports every scope problem at once, in this order.
fn scope_text(m: &ScopeMismatch) -> String {
    let mut msg = String::new();
    if m.region {
        msg.push_str("Credential should be scoped to a valid region. ");
    }
    if m.service {
        msg.push_str("Credential should be scoped to correct service: 'kms'. ");
    }
    if let Some(terminator) = &m.terminator {
        msg.push_str(&format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not \
             '{terminator}'. "
        ));
    }
    if let Some(d) = &m.date {
        msg.push_str(&format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from \
             HTTP: '{}' != '{}', from '{}'.",
            d.scope, d.request_day, d.request_time
        ));
    }
    msg
}

/// "5 min" for whole minutes (as AWS words the skew window), else seconds.
fn window_text(secs: i64) -> String {
    if secs % 60 == 0 {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} sec")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_windows_are_worded_in_minutes_or_seconds() {
        assert_eq!(window_text(300), "5 min");
        assert_eq!(window_text(90), "90 sec");
    }

    #[test]
    fn signature_refusals_carry_aws_names() {
        let cases = [
            (
                SignatureError::Missing,
                "MissingAuthenticationTokenException",
            ),
            (
                SignatureError::QueryAuthDisabled,
                "IncompleteSignatureException",
            ),
            (
                SignatureError::Unsigned(UnsignedHeader::Amz("x-amz-target".into())),
                "InvalidSignatureException",
            ),
            (
                SignatureError::UnsignedPayload("UNSIGNED-PAYLOAD".into()),
                "InvalidSignatureException",
            ),
            (SignatureError::SessionToken, "UnrecognizedClientException"),
            (SignatureError::Mismatch, "InvalidSignatureException"),
        ];
        for (e, name) in cases {
            let e = KmsError::from(e);
            assert_eq!((e.type_name(), e.status().as_u16()), (name, 400));
        }
        assert_eq!(
            KmsError::from(SignatureError::Unsigned(UnsignedHeader::Amz(
                "x-amz-target".into()
            )))
            .message()
            .unwrap(),
            "'x-amz-target' must be a 'SignedHeader' in the AWS Authorization."
        );
    }
}
