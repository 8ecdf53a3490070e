// qemu-nbd's --tls-authz objects: authz-simple (one identity allowed),
// authz-list (rules in the --object JSON form) and authz-list-file (the
// same rules in a JSON file, read again at each check unless refresh=off),
// with QEMU's property checks and messages. A rule matches an identity
// exactly (format "exact", the default) or as a shell glob ("glob"); the
// first rule that matches decides, otherwise the list's policy (deny by
// default).
// Thread rules: the checks run on the loop thread.
#pragma once

#include <string>
#include <vector>

#include "nbd/tls.h"
#include "strata_nbd/options.h"

namespace strata::tools::nbd_tool {

// Whether `type` is an authorization object type this tool knows.
bool is_authz_type(const std::string& type);
// Checks an authz-* object's properties (QEMU's messages).
Result<void> check_authz_object(const ObjectSpec& object);
// The check for --tls-authz=ID.
Result<nbd::TlsCreds::Authorizer> make_authorizer(const std::vector<ObjectSpec>& objects,
                                                  const std::string& id);

}  // namespace strata::tools::nbd_tool
