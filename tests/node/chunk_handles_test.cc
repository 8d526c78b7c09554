// Opaque chunk handles: they open to the sealed vector id only at the node that made them, in the
// session they were made for; they hide the id, differ on every seal, and a changed byte is
// refused.
#include "node/chunk_handles.h"

#include <cstdint>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace silo::node {
namespace {

using ::silo::testing::StatusIs;

crypto::SecretBytes Key(uint8_t fill) {
  crypto::SecretBytes key(32);
  for (uint8_t& byte : key.mutable_span()) byte = fill;
  return key;
}

constexpr char kSession[] = "0123456789abcdef";

TEST(ChunkHandles, OpenToTheSealedIdInTheirSession) {
  ASSERT_OK_AND_ASSIGN(const ChunkHandles handles, ChunkHandles::Create(Key(1)));
  for (const int64_t id : {int64_t{0}, int64_t{42}, int64_t{1} << 40, int64_t{-1}}) {
    ASSERT_OK_AND_ASSIGN(const std::string handle, handles.Seal(kSession, id));
    EXPECT_EQ(handle.size(), kChunkHandleSize);
    ASSERT_OK_AND_ASSIGN(const int64_t opened, handles.Open(kSession, handle));
    EXPECT_EQ(opened, id);
  }
}

TEST(ChunkHandles, DifferOnEverySealAndHideTheId) {
  ASSERT_OK_AND_ASSIGN(const ChunkHandles handles, ChunkHandles::Create(Key(1)));
  ASSERT_OK_AND_ASSIGN(const std::string first, handles.Seal(kSession, 7));
  ASSERT_OK_AND_ASSIGN(const std::string second, handles.Seal(kSession, 7));
  EXPECT_NE(first, second);
  // The id's little-endian bytes do not appear in the handle.
  const std::string id_bytes("\x07\0\0\0\0\0\0\0", 8);
  EXPECT_EQ(first.find(id_bytes), std::string::npos);
}

TEST(ChunkHandles, AreRefusedInAnotherSessionAtAnotherNodeOrWhenChanged) {
  ASSERT_OK_AND_ASSIGN(const ChunkHandles handles, ChunkHandles::Create(Key(1)));
  ASSERT_OK_AND_ASSIGN(const ChunkHandles other_node, ChunkHandles::Create(Key(2)));
  ASSERT_OK_AND_ASSIGN(const std::string handle, handles.Seal(kSession, 7));
  EXPECT_THAT(handles.Open("fedcba9876543210", handle),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(other_node.Open(kSession, handle), StatusIs(absl::StatusCode::kPermissionDenied));
  std::string changed = handle;
  changed[20] = static_cast<char>(changed[20] ^ 1);
  EXPECT_THAT(handles.Open(kSession, changed), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(handles.Open(kSession, handle.substr(1)),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(handles.Open(kSession, ""), StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace silo::node
