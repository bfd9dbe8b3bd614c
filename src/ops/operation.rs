//! Every operation of the KMS service model, as one enum: what
//! `X-Amz-Target` names, what [`super::dispatch`] matches on (exhaustively,
//! so a new operation cannot be forgotten there), and what authorization
//! needs to know about it.

macro_rules! operations {
    ($($name:ident),* $(,)?) => {
        /// A TrentService operation of the service model.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Operation {
            $($name),*
        }

        impl Operation {
            /// Every operation of the model, in its order.
            pub const ALL: &'static [Operation] = &[$(Operation::$name),*];

            /// The name in `X-Amz-Target` (after `TrentService.`) and in
            /// IAM actions (after `kms:`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Operation::$name => stringify!($name)),*
                }
            }
        }
    };
}

operations! {
    CancelKeyDeletion,
    ConnectCustomKeyStore,
    CreateAlias,
    CreateCustomKeyStore,
    CreateGrant,
    CreateKey,
    Decapsulate,
    Decrypt,
    DeleteAlias,
    DeleteCustomKeyStore,
    DeleteImportedKeyMaterial,
    DeriveSharedSecret,
    DescribeCustomKeyStores,
    DescribeKey,
    DisableKey,
    DisableKeyRotation,
    DisconnectCustomKeyStore,
    EnableKey,
    EnableKeyRotation,
    Encapsulate,
    Encrypt,
    GenerateDataKey,
    GenerateDataKeyPair,
    GenerateDataKeyPairWithoutPlaintext,
    GenerateDataKeyWithoutPlaintext,
    GenerateMac,
    GenerateRandom,
    GetKeyLastUsage,
    GetKeyPolicy,
    GetKeyRotationStatus,
    GetParametersForImport,
    GetPublicKey,
    ImportKeyMaterial,
    ListAliases,
    ListGrants,
    ListKeyPolicies,
    ListKeyRotations,
    ListKeys,
    ListResourceTags,
    ListRetirableGrants,
    PutKeyPolicy,
    ReEncrypt,
    ReplicateKey,
    RetireGrant,
    RevokeGrant,
    RotateKeyOnDemand,
    ScheduleKeyDeletion,
    Sign,
    TagResource,
    UntagResource,
    UpdateAlias,
    UpdateCustomKeyStore,
    UpdateKeyDescription,
    UpdatePrimaryRegion,
    Verify,
    VerifyMac,
}

impl Operation {
    /// The operation `name` names (case-sensitive, as AWS matches it).
    pub fn from_name(name: &str) -> Option<Operation> {
        Operation::ALL.iter().copied().find(|o| o.name() == name)
    }

    /// An operation on no key: authorized by identity policies alone,
    /// before it runs (the others are authorized against the key they
    /// name, once it is found).
    pub fn is_keyless(self) -> bool {
        matches!(
            self,
            Operation::CreateKey
                | Operation::GenerateRandom
                | Operation::ListAliases
                | Operation::ListKeys
                | Operation::ListRetirableGrants
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_the_model_has_56_operations() {
        assert_eq!(Operation::ALL.len(), 56);
        for &op in Operation::ALL {
            assert_eq!(Operation::from_name(op.name()), Some(op));
        }
        assert_eq!(Operation::from_name("decrypt"), None);
        assert_eq!(Operation::from_name("Nope"), None);
        assert!(Operation::ListKeys.is_keyless());
        assert!(!Operation::Decrypt.is_keyless());
    }
}
