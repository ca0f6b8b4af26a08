package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"chatserver/internal/certs"
	"chatserver/internal/certs/certstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// files returns paths for a certificate and its key in a fresh directory.
func files(t *testing.T) (certFile, keyFile string) {
	dir := t.TempDir()
	return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
}

// handshake makes one TLS connection over loopback to a server using r,
// trusting the given certificates, and returns the common name of the
// certificate the server presented.
func handshake(t *testing.T, r *certs.Reloadable, trusted ...*x509.Certificate) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		served <- tls.Server(c, &tls.Config{GetCertificate: r.GetCertificate}).Handshake()
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), certstest.Config(trusted...))
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer c.Close()
	if err := <-served; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestLoadServesTheCertificate(t *testing.T) {
	certFile, keyFile := files(t)
	a := certstest.Write(t, certFile, keyFile, "A")
	r, err := certs.Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := r.Certificate().Leaf.Subject.CommonName; got != "A" {
		t.Errorf("Certificate().Leaf CN = %q, want A", got)
	}
	if got := handshake(t, r, a); got != "A" {
		t.Errorf("handshake saw %q, want A", got)
	}
}

func TestLoadErrorsNameTheProblem(t *testing.T) {
	certFile, keyFile := files(t)
	certstest.Write(t, certFile, keyFile, "A")
	otherCert, otherKey := files(t)
	certstest.Write(t, otherCert, otherKey, "B")
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")

	for _, tc := range []struct {
		name, cert, key string
		want            []string // substrings of the error
	}{
		{"missing cert", missing, keyFile, []string{"tls certificate", missing, "no such file"}},
		{"missing key", certFile, missing, []string{"tls key", missing, "no such file"}},
		{"not PEM", garbage, keyFile, []string{garbage, "PEM"}},
		{"key of another cert", certFile, otherKey, []string{certFile, otherKey, "does not match"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := certs.Load(tc.cert, tc.key)
			if err == nil {
				t.Fatalf("Load = %v, nil; want an error", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q is more than one line", err)
			}
		})
	}
}

func TestReloadSwapsForNewHandshakes(t *testing.T) {
	certFile, keyFile := files(t)
	a := certstest.Write(t, certFile, keyFile, "A")
	r, err := certs.Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := handshake(t, r, a); got != "A" {
		t.Fatalf("before reload: handshake saw %q, want A", got)
	}

	b := certstest.Write(t, certFile, keyFile, "B")
	if got := handshake(t, r, a); got != "A" {
		t.Fatalf("files replaced but not reloaded: handshake saw %q, want A", got)
	}
	if err := r.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := handshake(t, r, b); got != "B" {
		t.Errorf("after reload: handshake saw %q, want B", got)
	}
}

func TestFailedReloadKeepsTheOldCertificate(t *testing.T) {
	certFile, keyFile := files(t)
	a := certstest.Write(t, certFile, keyFile, "A")
	r, err := certs.Load(certFile, keyFile)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	// A renewal caught half-written: the new certificate with the old key.
	otherCert, _ := files(t)
	certstest.Write(t, otherCert, filepath.Join(t.TempDir(), "unused.pem"), "B")
	renewed, err := os.ReadFile(otherCert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, renewed, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload of a mismatched pair succeeded")
	}
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	if err := r.Reload(); err == nil {
		t.Fatal("Reload with a missing key succeeded")
	}
	if got := handshake(t, r, a); got != "A" {
		t.Errorf("after failed reloads: handshake saw %q, want A", got)
	}
}
