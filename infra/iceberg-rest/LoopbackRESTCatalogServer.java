// Optional launcher for Iceberg's REST catalog fixture server that binds one address (default
// 127.0.0.1) instead of 0.0.0.0.
//
// org.apache.iceberg.rest.RESTCatalogServer (iceberg-open-api test fixtures) builds its Jetty
// server with `new Server(port)`, which always listens on every interface, and has no host setting.
// This class reuses the fixture's own pieces (the same CATALOG_* environment handling, the same
// backend catalog defaults and the same RESTServerCatalogAdapter) and only replaces the connector.
//
// Extra settings, read from the same catalog configuration as rest.port:
//   CATALOG_REST_HOST  (rest.host)  address to bind, default 127.0.0.1
//   CATALOG_REST_PORT  (rest.port)  port, default 8181
// and, from its own variable (the fixture logs every CATALOG_* value at start):
//   REST_CATALOG_BEARER_TOKEN  when set, every request must carry `Authorization: Bearer <it>`;
//                              others get 401 with an Iceberg REST error body
//
// Run without a build step (Java 11+ source-file mode, compiles in memory, ~1 s extra at start):
//   java -cp '.lakehouse/lib/iceberg-rest/*' infra/iceberg-rest/LoopbackRESTCatalogServer.java
// or compile once and run the class:
//   javac -cp '.lakehouse/lib/iceberg-rest/*' -d .lakehouse/lib/iceberg-rest-launcher \
//       infra/iceberg-rest/LoopbackRESTCatalogServer.java
//   java -cp '.lakehouse/lib/iceberg-rest-launcher:.lakehouse/lib/iceberg-rest/*' LoopbackRESTCatalogServer

import jakarta.servlet.http.HttpServletRequest;
import jakarta.servlet.http.HttpServletResponse;
import java.io.IOException;
import java.lang.reflect.Constructor;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Map;
import org.apache.iceberg.rest.RESTCatalogAdapter;
import org.apache.iceberg.rest.RESTCatalogServlet;
import org.eclipse.jetty.server.Request;
import org.eclipse.jetty.server.Server;
import org.eclipse.jetty.server.ServerConnector;
import org.eclipse.jetty.server.handler.HandlerWrapper;
import org.eclipse.jetty.server.handler.gzip.GzipHandler;
import org.eclipse.jetty.servlet.ServletContextHandler;
import org.eclipse.jetty.servlet.ServletHolder;

public class LoopbackRESTCatalogServer {
  private static final String PKG = "org.apache.iceberg.rest.";

  public static void main(String[] args) throws Exception {
    // The fixture's classes are package-private; reach them reflectively (classpath, unnamed module).
    Class<?> serverClass = Class.forName(PKG + "RESTCatalogServer");
    Constructor<?> serverCtor = serverClass.getDeclaredConstructor();
    serverCtor.setAccessible(true);
    Object fixture = serverCtor.newInstance();

    Method initBackend = serverClass.getDeclaredMethod("initializeBackendCatalog");
    initBackend.setAccessible(true);
    Object context = initBackend.invoke(fixture);

    Class<?> contextClass = Class.forName(PKG + "RESTCatalogServer$CatalogContext");
    Method configuration = contextClass.getDeclaredMethod("configuration");
    configuration.setAccessible(true);
    @SuppressWarnings("unchecked")
    Map<String, String> conf = (Map<String, String>) configuration.invoke(context);

    Class<?> adapterClass = Class.forName(PKG + "RESTServerCatalogAdapter");
    Constructor<?> adapterCtor = adapterClass.getDeclaredConstructor(contextClass);
    adapterCtor.setAccessible(true);
    RESTCatalogAdapter adapter = (RESTCatalogAdapter) adapterCtor.newInstance(context);

    ServletContextHandler handler = new ServletContextHandler(ServletContextHandler.NO_SESSIONS);
    handler.addServlet(new ServletHolder(new RESTCatalogServlet(adapter)), "/*");
    handler.insertHandler(new GzipHandler());

    String host = conf.getOrDefault("rest.host", "127.0.0.1");
    int port = Integer.parseInt(conf.getOrDefault("rest.port", "8181"));

    Server http = new Server();
    ServerConnector connector = new ServerConnector(http);
    connector.setHost(host);
    connector.setPort(port);
    http.addConnector(connector);
    String token = System.getenv().getOrDefault("REST_CATALOG_BEARER_TOKEN", "");
    if (token.isEmpty()) {
      http.setHandler(handler);
    } else {
      BearerToken guard = new BearerToken(token);
      guard.setHandler(handler);
      http.setHandler(guard);
    }
    // Finish in-flight requests on SIGTERM instead of dropping them.
    http.setStopAtShutdown(true);
    http.setStopTimeout(5_000);
    http.start();
    http.join();
  }

  /** Lets a request through only with the expected bearer token (compared in constant time). */
  static final class BearerToken extends HandlerWrapper {
    private final byte[] expected;

    BearerToken(String token) {
      this.expected = ("Bearer " + token).getBytes(StandardCharsets.UTF_8);
    }

    @Override
    public void handle(String target, Request base, HttpServletRequest request, HttpServletResponse response)
        throws IOException, jakarta.servlet.ServletException {
      String given = request.getHeader("Authorization");
      byte[] got = given == null ? new byte[0] : given.getBytes(StandardCharsets.UTF_8);
      if (MessageDigest.isEqual(expected, got)) {
        super.handle(target, base, request, response);
        return;
      }
      base.setHandled(true);
      response.setStatus(401);
      response.setContentType("application/json");
      response.setHeader("WWW-Authenticate", "Bearer");
      response.getWriter().write(
          "{\"error\":{\"message\":\"missing or wrong bearer token\",\"type\":\"NotAuthorizedException\",\"code\":401}}");
    }
  }
}
