// The terminal WebSocket at /api/terminals/{id}. (Being written: answers 404 for now.)
#include "agent/agent_internal.hpp"

namespace terminals::detail {

void handle_terminal_upgrade(const std::shared_ptr<AgentState>&, ServerExchangePtr exchange,
                             std::string) {
  exchange->respond(404, Headers{{"Content-Type", "application/json"}},
                    R"({"error":"Session not found"})");
}

}  // namespace terminals::detail
