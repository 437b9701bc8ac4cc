//! Row encoding: one version byte, then postcard. A reader refuses a version it does not know
//! rather than guess, so a future format change is an explicit migration. The one field added
//! so far went at the end of its row, with a decoder that accepts rows without it
//! (`schema::UploadRow::decode`).

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::MetaError;

/// The only row format so far.
pub const VERSION: u8 = 1;

pub fn encode<T: Serialize>(row: &T) -> Vec<u8> {
    postcard::to_extend(row, vec![VERSION]).expect("postcard encoding into a Vec cannot fail")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, MetaError> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest).map_err(|e| MetaError::Corrupt(e.to_string())),
        Some((v, _)) => Err(MetaError::Corrupt(format!("unknown row version {v}"))),
        None => Err(MetaError::Corrupt("empty row".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::schema::{BlobRow, BlobState};

    #[test]
    fn round_trip_and_version_check() {
        let row = BlobRow {
            size: 5,
            refcount: 2,
            links: 1,
            created_ms: 9,
            state: BlobState::Deleting { since_ms: 3 },
            referenced: true,
        };
        let bytes = encode(&row);
        assert_eq!(bytes[0], VERSION);
        assert_eq!(decode::<BlobRow>(&bytes).unwrap(), row);
        let mut future = bytes.clone();
        future[0] = 2;
        assert!(decode::<BlobRow>(&future).is_err());
    }
}
