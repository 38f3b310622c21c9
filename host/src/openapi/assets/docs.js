// Starts Swagger UI on the document the page names. A file of its own
// because the docs page's Content-Security-Policy allows no inline script.
window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.spec,
    domNode: root,
    deepLinking: true,
    // Never send the document to validator.swagger.io (the page is offline).
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
