// Device and cloud of a DRAGON run in this process, joined by one TCP connection through a
// TcpShaper (eval/tcp_shaper.h): the bench's network. Each message travels as a frame
// [u32 length][u8 kind][serialized Draft | Verdict | AggregatorHandoff]; a reader thread per end
// pushes what arrives into that side's DragonInbox, and a side's Finish half-closes its end so
// that the other's inbox closes after the data in flight.
//
// Thread-safety: each side sends from one thread; Finish once per side.
#ifndef SILO_EVAL_SHAPED_DRAGON_LINK_H_
#define SILO_EVAL_SHAPED_DRAGON_LINK_H_

#include <memory>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "eval/tcp_shaper.h"
#include "node/dragon_peer.h"

namespace silo::eval {

class ShapedDragonLink {
 public:
  // Listens for the cloud, starts the shaper in front of it (one-way delay plus uniform jitter
  // in [0, jitter] per chunk) and connects the device through it. Unavailable when a socket or
  // the shaper cannot be set up.
  static absl::StatusOr<std::unique_ptr<ShapedDragonLink>> Open(node::DragonInbox* device_inbox,
                                                                node::DragonInbox* cloud_inbox,
                                                                absl::Duration one_way_delay,
                                                                absl::Duration jitter);
  ~ShapedDragonLink();

  ShapedDragonLink(const ShapedDragonLink&) = delete;
  ShapedDragonLink& operator=(const ShapedDragonLink&) = delete;

  // Unavailable when the connection is gone.
  absl::Status SendToCloud(const node::DragonMessage& message);
  absl::Status SendToDevice(const node::DragonMessage& message);
  void FinishDevice();  // the device sends no more
  void FinishCloud();

 private:
  ShapedDragonLink() = default;

  std::unique_ptr<TcpShaper> shaper_;
  int device_fd_ = -1;
  int cloud_fd_ = -1;
  std::thread device_reader_;
  std::thread cloud_reader_;
};

}  // namespace silo::eval

#endif  // SILO_EVAL_SHAPED_DRAGON_LINK_H_
