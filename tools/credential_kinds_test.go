package tools

import (
	"slices"
	"testing"
)

func TestCredentialKindsFollowTheInjection(t *testing.T) {
	tests := []struct {
		kind   string
		c      Credential
		want   []string
		minted bool
	}{
		{"http", Credential{Inject: "bearer"}, []string{CredStatic}, false},
		{"http", Credential{Inject: "aws_sigv4"}, []string{CredStatic}, false},
		{"http", Credential{Inject: "oauth2"}, []string{CredOAuth2}, false},
		{"http", Credential{Inject: "github_app"}, []string{CredGitHubApp}, true},
		{"s3", Credential{Inject: "aws_sigv4"}, []string{CredStatic, CredAWSSTS}, true},
	}
	for _, tc := range tests {
		got := CredentialKinds(tc.kind, tc.c)
		if !slices.Equal(got, tc.want) {
			t.Errorf("CredentialKinds(%s, %s) = %v, want %v", tc.kind, tc.c.Inject, got, tc.want)
		}
		if minted := slices.ContainsFunc(got, PerSession); minted != tc.minted {
			t.Errorf("CredentialKinds(%s, %s) minted per session = %v, want %v", tc.kind, tc.c.Inject, minted, tc.minted)
		}
	}
}
