//! A payload's meta in its object's own user metadata, so that a small payload is one
//! PutObject. S3 allows 2 KB of user metadata, names and values counted together; a
//! meta that does not fit (a large identity, a large `metadata` object) goes in the
//! sidecar instead, as a multipart upload's does.
//!
//! Every put marks its object and its sidecar with one put id. A sidecar whose put id
//! differs from its object's was left by a put that lost the race for the key, and is
//! not that object's meta.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::storage::ObjectMeta;

/// User metadata: the put that stored the object.
pub(super) const PUT_ID: &str = "put-id";
/// User metadata: the whole meta, JSON in base64 (S3 wants ASCII).
const META: &str = "gateway-meta";
/// What S3 allows, with room to spare.
const BUDGET: usize = 2000;

/// `md` with the meta added, when the whole still fits S3's limit.
pub(super) fn with_meta(mut md: HashMap<String, String>, meta: &ObjectMeta) -> Option<HashMap<String, String>> {
    let json = serde_json::to_vec(meta).ok()?;
    md.insert(META.into(), STANDARD.encode(json));
    let total: usize = md.iter().map(|(k, v)| k.len() + v.len()).sum();
    (total <= BUDGET).then_some(md)
}

fn get<'a>(md: Option<&'a HashMap<String, String>>, name: &str) -> Option<&'a str> {
    md?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The meta an object carries in its user metadata, if it does.
fn meta(md: Option<&HashMap<String, String>>) -> Option<ObjectMeta> {
    let bytes = STANDARD.decode(get(md, META)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Which meta describes an object with user metadata `md`: its sidecar, when that is
/// this object's (same put id; either lacking one is an object stored before put ids),
/// else the meta it carries itself. `None`: neither (a payload of the replaced services).
pub(super) fn choose(md: Option<&HashMap<String, String>>, sidecar: Option<ObjectMeta>) -> Option<ObjectMeta> {
    let object_put = get(md, PUT_ID);
    let sidecar = sidecar.filter(|s| match (object_put, s.put_id.as_deref()) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    });
    sidecar.or_else(|| meta(md))
}

/// The put id an object carries.
pub(super) fn put_id(md: Option<&HashMap<String, String>>) -> Option<String> {
    get(md, PUT_ID).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(identity_len: usize) -> ObjectMeta {
        let mut m = crate::storage::conformance::meta("k");
        m.b64_identity = "x".repeat(identity_len);
        m.put_id = Some("p1".into());
        m
    }

    #[test]
    fn a_typical_meta_travels_inline_and_comes_back_whole() {
        let m = sample(600);
        let md = with_meta(HashMap::from([(PUT_ID.to_string(), "p1".to_string())]), &m).expect("fits");
        assert_eq!(choose(Some(&md), None), Some(m));
    }

    #[test]
    fn a_meta_over_s3s_limit_does_not() {
        assert!(with_meta(HashMap::new(), &sample(2000)).is_none());
    }

    #[test]
    fn a_sidecar_of_another_put_is_not_the_objects() {
        let mine = sample(10);
        let md = with_meta(HashMap::from([(PUT_ID.to_string(), "p1".to_string())]), &mine).unwrap();
        let theirs = ObjectMeta { put_id: Some("p2".into()), sha256: "other".into(), ..mine.clone() };
        assert_eq!(choose(Some(&md), Some(theirs)), Some(mine.clone()));
        let marked = ObjectMeta { unconfirmed: Some("why".into()), ..mine.clone() };
        assert_eq!(choose(Some(&md), Some(marked.clone())), Some(marked), "its own sidecar wins (set_meta)");
    }
}
