// Package certs holds a TLS certificate that can be replaced while
// listeners use it, so a renewed certificate takes effect without a
// restart and without dropping the connections already open.
package certs

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
)

// Reloadable is a certificate and key read from two PEM files. Its
// GetCertificate goes in a tls.Config; Reload reads the files again.
//
// The certificate is behind an atomic pointer: handshakes read it without
// a lock, and a handshake that started before a reload finishes with the
// certificate it began with. Connections already established keep their
// session; only new handshakes see a new certificate.
type Reloadable struct {
	certFile, keyFile string
	cert              atomic.Pointer[tls.Certificate]
}

// Load reads the certificate and key files, or returns an error naming
// the file at fault.
func Load(certFile, keyFile string) (*Reloadable, error) {
	r := &Reloadable{certFile: certFile, keyFile: keyFile}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again and, if they hold a valid pair, makes it
// the certificate for new handshakes. On an error the certificate in use
// is kept, so a half-written renewal cannot take the listener down.
func (r *Reloadable) Reload() error {
	certPEM, err := os.ReadFile(r.certFile)
	if err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(r.keyFile)
	if err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("tls certificate %s with key %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf == nil { // X509KeyPair parses it unless GODEBUG=x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls certificate %s: %w", r.certFile, err)
		}
	}
	r.cert.Store(&cert)
	return nil
}

// Certificate returns the certificate in use. Its Leaf is parsed, so a
// caller can log its subject and expiry.
func (r *Reloadable) Certificate() *tls.Certificate {
	return r.cert.Load()
}

// GetCertificate is for tls.Config.GetCertificate: every handshake gets
// the certificate in use at its start.
func (r *Reloadable) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.cert.Load(), nil
}
