//! The nemesis: a cluster under random faults and client load, and a
//! checker of what it answered (issue 19).

mod check;
// The runner writes every field; the checker reads only some.
#[allow(dead_code)]
mod history;
