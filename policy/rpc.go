package policy

import "strings"

// rpcSet is a set of RPCs, one bit per RPC in the order of rpcNames.
type rpcSet uint32

// The RPCs of sigil.v1.KeyManagementService, one bit each.
const (
	bitCreateKey rpcSet = 1 << iota
	bitUpdateKey
	bitRotateKey
	bitEnableKeyVersion
	bitDisableKeyVersion
	bitScheduleKeyVersionDestruction
	bitRestoreKeyVersion
	bitEncrypt
	bitDecrypt
	bitReEncrypt
	bitGenerateDataKey
	bitSign
	bitVerify
	bitSignJWT
	bitGetKey
	bitListKeys
	bitListKeyVersions
	bitGetPublicKey
)

// The named groups usable in a rule's allow list.
const (
	setAdmin = bitCreateKey | bitUpdateKey | bitRotateKey | bitEnableKeyVersion |
		bitDisableKeyVersion | bitScheduleKeyVersionDestruction | bitRestoreKeyVersion
	setUse     = bitEncrypt | bitDecrypt | bitReEncrypt | bitGenerateDataKey | bitSign | bitVerify | bitSignJWT
	setRead    = bitGetKey | bitListKeys | bitListKeyVersions | bitGetPublicKey
	setEncrypt = bitEncrypt | bitGenerateDataKey
	setDecrypt = bitDecrypt
	setSign    = bitSign | bitSignJWT
	setVerify  = bitVerify | bitGetPublicKey
	// setAll is "*": every use and read RPC, never an admin RPC.
	setAll = setUse | setRead
)

// serviceName is the fully qualified name of the Connect service whose
// RPCs a policy governs.
const serviceName = "sigil.v1.KeyManagementService"

// rpcNames returns the RPC names in bit order.
func rpcNames() [18]string {
	return [18]string{
		"CreateKey", "UpdateKey", "RotateKey", "EnableKeyVersion", "DisableKeyVersion",
		"ScheduleKeyVersionDestruction", "RestoreKeyVersion",
		"Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "Sign", "Verify", "SignJWT",
		"GetKey", "ListKeys", "ListKeyVersions", "GetPublicKey",
	}
}

// RPCs returns the short names of every RPC a policy can grant, such as
// "Encrypt", in a fixed order. The caller may modify the slice.
func RPCs() []string {
	names := rpcNames()
	return names[:]
}

// IsAdmin reports whether rpc is an admin RPC: one that creates a key or
// changes a key's settings or version states. Admin RPCs are granted only
// by naming them or the "admin" group, never by "*".
func IsAdmin(rpc string) bool {
	bit, ok := rpcBit(rpc)
	return ok && bit&setAdmin != 0
}

// RPCFromProcedure returns the short RPC name of a Connect procedure such
// as "/sigil.v1.KeyManagementService/Encrypt", and false if the procedure
// is not an RPC of that service.
func RPCFromProcedure(procedure string) (string, bool) {
	rest, ok := strings.CutPrefix(procedure, "/"+serviceName+"/")
	if !ok {
		return "", false
	}
	if _, ok := rpcBit(rest); !ok {
		return "", false
	}
	return rest, true
}

// rpcBit returns the bit of the RPC with the given short name.
func rpcBit(name string) (rpcSet, bool) {
	for i, n := range rpcNames() {
		if n == name {
			return 1 << i, true
		}
	}
	return 0, false
}

// groupSet returns the RPCs of a named group.
func groupSet(name string) (rpcSet, bool) {
	switch name {
	case "admin":
		return setAdmin, true
	case "use":
		return setUse, true
	case "read":
		return setRead, true
	case "encrypt":
		return setEncrypt, true
	case "decrypt":
		return setDecrypt, true
	case "sign":
		return setSign, true
	case "verify":
		return setVerify, true
	case "*":
		return setAll, true
	}
	return 0, false
}

// resolveAllow returns the RPCs an allow entry grants: an RPC name or a
// group name, both case-sensitive.
func resolveAllow(entry string) (rpcSet, bool) {
	if s, ok := groupSet(entry); ok {
		return s, true
	}
	return rpcBit(entry)
}

// suggestAllow returns a known RPC or group name that equals entry but
// for case, or "".
func suggestAllow(entry string) string {
	for _, n := range rpcNames() {
		if strings.EqualFold(n, entry) {
			return n
		}
	}
	for _, g := range []string{"admin", "use", "read", "encrypt", "decrypt", "sign", "verify"} {
		if strings.EqualFold(g, entry) {
			return g
		}
	}
	return ""
}
