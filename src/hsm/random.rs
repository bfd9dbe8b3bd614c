//! The token's random bytes, drawn one call per use or in blocks.
//!
//! With a block size of 0 every draw is its own C_GenerateRandom. With a
//! block size of N, one C_GenerateRandom fills an N-byte buffer that later
//! draws (data keys, IVs) take from, front to back, until it runs short and
//! is filled again: on a network HSM that saves a round trip per request.
//! Every byte is handed out once. The buffer is zeroized on drop
//! ([`Zeroizing`]), and the bytes a draw takes are overwritten in it at once,
//! so what it holds is only bytes not yet used. The cost is stated in
//! docs/security.md: up to N bytes of future data keys and IVs wait in the
//! gateway's memory instead of in the token.

use std::sync::Mutex;

use super::metered::Metered;
use zeroize::{Zeroize, Zeroizing};

use super::HsmError;

/// Random bytes from the token, in blocks of `block` bytes (0: no buffer).
pub struct RandomSource {
    block: usize,
    /// The buffer and how much of it is used up.
    state: Mutex<(Zeroizing<Vec<u8>>, usize)>,
}

impl std::fmt::Debug for RandomSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RandomSource")
            .field("block", &self.block)
            .finish_non_exhaustive()
    }
}

impl RandomSource {
    pub fn new(block: usize) -> RandomSource {
        RandomSource {
            block,
            state: Mutex::new((Zeroizing::new(Vec::new()), 0)),
        }
    }

    /// Fills `out` with bytes from the token's RNG: from the buffer, which
    /// `session` refills when it runs short; a draw larger than a block (or
    /// with no buffer) is its own call.
    pub(super) fn fill(&self, session: Metered<'_>, out: &mut [u8]) -> Result<(), HsmError> {
        if out.len() > self.block {
            session.generate_random_slice(out)?;
            return Ok(());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (buf, used) = &mut *state;
        if buf.len() - *used < out.len() {
            let mut fresh = Zeroizing::new(vec![0u8; self.block]);
            session.generate_random_slice(&mut fresh)?;
            *buf = fresh;
            *used = 0;
        }
        let taken = &mut buf[*used..*used + out.len()];
        out.copy_from_slice(taken);
        taken.zeroize();
        *used += out.len();
        Ok(())
    }
}
