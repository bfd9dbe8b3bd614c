//! The checks against the gateway's own state: the clock, the credential
//! scope, and the signing key of the credential (derived once a day and
//! cached).

use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::dates::format_amz_date;
use super::{
    Credential, DateMismatch, ScopeMismatch, SignatureError, SigningKey, TERMINATOR, Verifier,
};

type HmacSha256 = Hmac<Sha256>;

impl Verifier {
    /// The request time must be within the skew of now, in both directions;
    /// a presigned request may instead be as old as its `X-Amz-Expires`.
    pub(super) fn check_time(
        &self,
        request: i64,
        now: i64,
        expires: Option<u64>,
    ) -> Result<(), SignatureError> {
        let skew = i64::try_from(self.max_skew.as_secs()).unwrap_or(i64::MAX);
        let max_age = expires.map_or(skew, |e| i64::try_from(e).unwrap_or(i64::MAX));
        let earliest = now.saturating_sub(max_age);
        if request < earliest {
            return Err(SignatureError::Expired {
                request: format_amz_date(request),
                earliest: format_amz_date(earliest),
                now: format_amz_date(now),
                window_secs: max_age,
            });
        }
        let latest = now.saturating_add(skew);
        if request > latest {
            return Err(SignatureError::NotYetCurrent {
                request: format_amz_date(request),
                latest: format_amz_date(latest),
                now: format_amz_date(now),
                window_secs: skew,
            });
        }
        Ok(())
    }

    /// Splits `keyid/date/region/service/terminator` and checks the scope.
    /// Returns the access key id and the scope date.
    pub(super) fn check_scope<'a>(
        &self,
        credential: &'a str,
        amz_date: &str,
    ) -> Result<(&'a str, &'a str), SignatureError> {
        let parts: Vec<&str> = credential.trim_end_matches('/').split('/').collect();
        let [key_id, date, region, service, terminator] = parts[..] else {
            return Err(SignatureError::MalformedCredential(credential.to_owned()));
        };
        let request_day = amz_date.get(..8).unwrap_or(amz_date);
        let mismatch = ScopeMismatch {
            region: region != self.region,
            service: service != self.service,
            terminator: (terminator != TERMINATOR).then(|| terminator.to_owned()),
            date: (date != request_day).then(|| DateMismatch {
                scope: date.to_owned(),
                request_day: request_day.to_owned(),
                request_time: amz_date.to_owned(),
            }),
        };
        // AWS reports every scope problem at once.
        if mismatch.region
            || mismatch.service
            || mismatch.terminator.is_some()
            || mismatch.date.is_some()
        {
            return Err(SignatureError::Scope(mismatch));
        }
        Ok((key_id, date))
    }

    /// The signing key of `credential` for one scope day, from the cache or
    /// derived and cached.
    pub(super) fn signing_key(
        &self,
        credential: &Credential,
        day: i64,
        scope_date: &str,
    ) -> Result<SigningKey, SignatureError> {
        let cache_key = (day, credential.access_key_id.clone());
        // A poisoned lock only means another thread panicked mid-insert; every
        // entry is written whole, so the map is still sound.
        if let Some(key) = self
            .signing_keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&cache_key)
        {
            return Ok(key.clone());
        }

        let mut seed = Zeroizing::new(Vec::with_capacity(4 + 64));
        seed.extend_from_slice(b"AWS4");
        seed.extend_from_slice(credential.secret.expose_secret().as_bytes());
        let k_date = Zeroizing::new(hmac_sha256(&seed, scope_date.as_bytes())?);
        let k_region = Zeroizing::new(hmac_sha256(k_date.as_slice(), self.region.as_bytes())?);
        let k_service = Zeroizing::new(hmac_sha256(k_region.as_slice(), self.service.as_bytes())?);
        let key = Zeroizing::new(hmac_sha256(k_service.as_slice(), TERMINATOR.as_bytes())?);

        let mut cache = self.signing_keys.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(d, _), _| (d - day).abs() <= 1);
        cache.insert(cache_key, key.clone());
        Ok(key)
    }
}

pub(super) fn hmac_sha256(key: &[u8], data: &[u8]) -> Result<[u8; 32], SignatureError> {
    // HMAC takes keys of any length, so this error cannot happen; it is
    // mapped rather than unwrapped to keep the server free of panics.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key).map_err(|_| SignatureError::Internal)?;
    mac.update(data);
    Ok(mac.finalize().into_bytes().into())
}
