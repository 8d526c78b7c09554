// absl::Status ⇄ grpc::Status. Both use the canonical code space, so codes map one to one.
#ifndef SILO_NODE_GRPC_STATUS_H_
#define SILO_NODE_GRPC_STATUS_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace silo::node {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return {static_cast<grpc::StatusCode>(status.code()), std::string(status.message())};
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return {static_cast<absl::StatusCode>(status.error_code()), status.error_message()};
}

}  // namespace silo::node

#endif  // SILO_NODE_GRPC_STATUS_H_
