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
    check(b"abc", "not a safetensors file: shorter than 8 bytes");
    check(&u64::MAX.to_le_bytes(), "exceeds the file size");
    check(
        &with_header("{nope", b""),
        "not a safetensors file: bad JSON header",
    );
    check(
        &with_header("[1]", b""),
        "not a safetensors file: bad JSON header",
    );
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
        "malformed safetensors file",
    );
    check(
        &with_header(
            r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}}"#,
            &[0; 4],
        ),
        "malformed safetensors file",
    );
    check(
        &with_header(r#"{"__metadata__":{"a":1}}"#, b""),
        "not a safetensors file: bad JSON header",
    );
}

#[test]
fn half_precision_converts() {
    for (h, f) in [
        (0x3c00u16, 1.0f32),
        (0xc000, -2.0),
        (0x0000, 0.0),
        (0x0001, 2f32.powi(-24)),
        (0x03ff, 1023.0 * 2f32.powi(-24)),
        (0x7bff, 65504.0),
    ] {
        assert_eq!(f16_to_f32(h), f, "{h:#06x}");
    }
    assert!(f16_to_f32(0x7c00).is_infinite());
}

#[test]
fn one_tensor_is_read_from_a_mapped_file() {
    let dir = std::env::temp_dir().join(format!("ngsd-gate-st-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("w.safetensors");
    std::fs::write(&path, sample().to_bytes()).unwrap();
    let t = SafeTensors::read_tensor(&path, "weight").unwrap();
    assert_eq!(t, sample().tensors["weight"]);
    let err = SafeTensors::read_tensor(&path, "nope")
        .unwrap_err()
        .to_string();
    assert!(err.contains("no tensor `nope` (it has: "), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
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
