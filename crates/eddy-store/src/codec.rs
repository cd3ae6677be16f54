//! How a profile is stored: the encoding of the `profiles` table's values.

use eddy_model::profile::Profile;

use crate::StoreError;

/// Decodes a stored profile (MessagePack with field names).
pub fn decode_profile(bytes: &[u8]) -> Result<Profile, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        table: "profiles",
        reason: e.to_string(),
    })
}

/// Encodes a profile for storage. MessagePack with field names: self-describing (custom values
/// hold arbitrary JSON), tolerant of added fields, and without JSON's string escaping, which
/// was the writer's largest serialization cost.
pub fn encode_profile(profile: &Profile) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(profile).map_err(|e| StoreError::Backend(e.to_string()))
}
