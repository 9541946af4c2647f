// The test-only TLS identity of the Kubernetes API fixture (k8s-fixture.ts): a self-signed certificate and
// its key, which clients trust as the cluster's CA (kubeconfig, service-account ca.crt).
/** Test-only self-signed certificate for 127.0.0.1 / localhost (EC P-256, valid to 2126). Not a secret. */
export const FIXTURE_CA = `-----BEGIN CERTIFICATE-----
MIIBrzCCAVWgAwIBAgIUczxUOAMlUK54CHregqXDjMAbfIwwCgYIKoZIzj0EAwIw
HjEcMBoGA1UEAwwTbnNtLWNuaS1rOHMtZml4dHVyZTAgFw0yNjExMjgwODQxMzBa
GA8yMTI2MTEwNDA4NDEzMFowHjEcMBoGA1UEAwwTbnNtLWNuaS1rOHMtZml4dHVy
ZTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABINDEoCygDbCO+K7Ob1o5pYxiyrO
pA3xrN/BWjT5b4vt7Zyo+Hp5a38hZTTuha1b0JmgjuWyvAdje9i3eNXxB5KjbzBt
MB0GA1UdDgQWBBR1luTFtzJgLpr/M+qA3yd7SkZySDAfBgNVHSMEGDAWgBR1luTF
tzJgLpr/M+qA3yd7SkZySDAPBgNVHRMBAf8EBTADAQH/MBoGA1UdEQQTMBGHBH8A
AAGCCWxvY2FsaG9zdDAKBggqhkjOPQQDAgNIADBFAiBnZruwbgR6j//H5Z1+M4K/
MMPtFJcifTLAEKL3Pt0KRQIhAJpV1q/fSwYi9wuGhcqWyg3OWZo2H9J95whZ3qoF
9N5W
-----END CERTIFICATE-----
`
export const FIXTURE_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg3VgML1OrY9CvsmJV
ruQ+8/UM+QRDRKjmWBuQyBUXfAyhRANCAASDQxKAsoA2wjviuzm9aOaWMYsqzqQN
8azfwVo0+W+L7e2cqPh6eWt/IWU07oWtW9CZoI7lsrwHY3vYt3jV8QeS
-----END PRIVATE KEY-----
`
