//! kmsgate's black-box tests, as one test binary (so aws-sdk-kms and the
//! rest are linked once): every module starts the real kmsgate binary on a
//! real SoftHSM2 token and drives it with real clients. `common` is the
//! harness. Run one file's tests with `cargo test --test it NAME::`, e.g.
//! `cargo test --test it hmac::`.

mod common;

mod alias_race;
mod asymmetric;
mod audit;
mod backup;
mod bench_token;
mod byok_bound;
mod cli;
mod commit_faults;
mod container;
mod crash;
mod custody;
mod data_key_pair;
mod decrypt_probe;
mod deletion_race;
mod deploy;
mod divergences;
mod doctor;
mod durability;
mod faults;
mod forward_records;
mod fuzz;
mod gateway;
mod grant_context_case;
mod grant_scope;
mod h2_limits;
mod hmac;
mod http;
mod import;
mod import_asymmetric;
mod iv_source;
mod key_agreement;
mod lifecycle;
mod load_race;
mod logs;
mod metrics;
mod missing_version;
mod nemesis;
mod nemesis_findings;
mod pin;
mod policies;
mod policy_alias;
mod random_block;
mod recovery;
mod rsa_encryption;
mod secrets_env;
mod signals;
mod signing;
mod sync;
mod tags;
mod test_script;
mod tls;
mod unreadable;
mod unreadable_load;
mod workers;
mod xks;
mod xks_auth;
mod xks_show;
