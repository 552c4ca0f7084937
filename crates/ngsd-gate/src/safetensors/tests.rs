//! Tests for the safetensors reader and writer.

use super::*;

fn sample() -> SafeTensors {
    let mut st = SafeTensors::default();
    st.metadata.insert("hidden_size".to_owned(), "3".to_owned());
    st.tensors.insert(
        "weight".to_owned(),
        Tensor {
            shape: vec![3],
            data: vec![1.0, -2.5, 3.0],
        },
    );
    st.tensors.insert(
        "bias".to_owned(),
        Tensor {
            shape: vec![],
            data: vec![0.25],
        },
    );
    st
}

#[test]
fn round_trips() {
    let st = sample();
    let bytes = st.to_bytes();
    assert_eq!(u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 8, 0);
    assert_eq!(SafeTensors::parse(&bytes).unwrap(), st);
}

#[test]
fn reads_f64_and_bf16() {
    let header = r#"{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&1.5f64.to_le_bytes());
    bytes.extend_from_slice(&((2.0f32.to_bits() >> 16) as u16).to_le_bytes());
    let st = SafeTensors::parse(&bytes).unwrap();
    assert_eq!(st.tensors["a"].data, vec![1.5]);
    assert_eq!(st.tensors["b"].data, vec![2.0]);
}

fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

#[test]
fn malformed_files_are_explained() {
    let check = |bytes: &[u8], expected: &str| {
        let err = SafeTensors::parse(bytes).unwrap_err();
        assert!(err.contains(expected), "`{err}` lacks `{expected}`");
    };
    check(b"abc", "shorter than 8 bytes");
    check(&u64::MAX.to_le_bytes(), "exceeds the file size");
    check(&with_header("{nope", b""), "bad JSON header");
    check(&with_header("[1]", b""), "not a JSON object");
    check(
        &with_header(
            r#"{"w":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#,
            &[0],
        ),
        "tensor `w`: dtype I8 is not supported",
    );
    check(
        &with_header(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        "needs 8 bytes, data_offsets give 4",
    );
    check(
        &with_header(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 4],
        ),
        "outside the 4 data bytes",
    );
    check(
        &with_header(r#"{"__metadata__":{"a":1}}"#, b""),
        "metadata `a` is not a string",
    );
}

#[test]
fn read_names_the_path() {
    let err = SafeTensors::read(Path::new("/nonexistent/w.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read weights file /nonexistent/w.safetensors"),
        "{err}"
    );
}
